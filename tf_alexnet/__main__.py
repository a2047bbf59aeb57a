"""`python -m tf_alexnet ...`: the `tf-alexnet` command line, for when its script is not on PATH."""

import sys

from tf_alexnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
