from visionq.cli import main

main()
