"""Generate videos with HunyuanVideo from the command line (the official script's name).

    python sample_video.py --prompt "A cat walks on the grass, realistic style."
    python sample_video.py --model tiny-random --prompt "a test"          # offline demo

Every flag is documented by ``python sample_video.py --help``; the program is
:mod:`hyvideo.apps.sample` (also installed as ``hyvideo-sample``).
"""

import sys

from hyvideo.apps.sample import main

if __name__ == "__main__":
    sys.exit(main())
