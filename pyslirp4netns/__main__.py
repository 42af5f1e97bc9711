"""``python -m pyslirp4netns``: the same entry point as the console script."""

import sys

from pyslirp4netns.cli import main

# argv[0] would be this file's path; usage and getopt messages should name the program.
sys.exit(main(["pyslirp4netns", *sys.argv[1:]]))
