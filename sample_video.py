"""Command-line generation entry point: not implemented yet.

The end-to-end pipeline (text encoders -> denoising -> VAE decode -> mp4) is tracked as its own
issue. Until it lands this script only says so (exit code 2) rather than pretending to work.
"""

import sys

if __name__ == "__main__":
    print("sample_video.py: end-to-end generation is not implemented yet; the DiT, scheduler and "
          "loaders are (see README)", file=sys.stderr)
    sys.exit(2)
