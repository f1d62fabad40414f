import argparse

from services.common.entry import main
from services.common.settings import Settings


def _serve_openai(settings: Settings, args: argparse.Namespace) -> None:
    from services.inference.openai_api.app import serve  # FastAPI only in this process

    serve(settings, args)


if __name__ == "__main__":
    main("inference", commands={"openai": ("run the OpenAI-compatible HTTP API", _serve_openai)})
