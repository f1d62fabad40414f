from services.common.entry import main

if __name__ == "__main__":
    main("inference")
