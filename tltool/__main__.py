from tltool.cli import main

main()
