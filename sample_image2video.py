"""Animate an image with HunyuanVideo-I2V from the command line (the official script's name).

    python sample_image2video.py --model tiny-random-i2v --i2v-image-path cat.png --prompt "a cat walks"
    python sample_image2video.py --prompt "..." --i2v-image-path img.png --i2v-resolution 720p \\
        --i2v-stability --flow-shift 7.0 --seed 0          # the official README's stable variant

Every flag is documented by ``python sample_image2video.py --help``; the program is
:mod:`hyvideo.apps.sample` with --i2v-mode on (also installed as ``hyvideo-i2v``).
"""

import sys

from hyvideo.apps.sample import main_i2v

if __name__ == "__main__":
    sys.exit(main_i2v())
