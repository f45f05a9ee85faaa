"""Serve HunyuanVideo as a Gradio web page (the official script's name).

    python gradio_server.py --model tiny-random          # offline demo, random weights

Every flag is documented by ``python gradio_server.py --help``; the program is
:mod:`hyvideo.apps.web` (also installed as ``hyvideo-web``).
"""

import sys

from hyvideo.apps.web import main

if __name__ == "__main__":
    sys.exit(main())
