"""python -m keypoints COMMAND: the kfkd command."""

from keypoints.cli import main

main()
