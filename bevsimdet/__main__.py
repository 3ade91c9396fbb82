from bevsimdet.cli import main

main()
