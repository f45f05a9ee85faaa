"""``python -m hyvideo``: the command-line generator (the same as ``sample_video.py``)."""

import sys

from hyvideo.apps.sample import main

if __name__ == "__main__":
    sys.exit(main())
