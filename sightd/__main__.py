from sightd.cli import main

main()
