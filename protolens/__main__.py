from protolens.cli import main

main()
