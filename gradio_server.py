"""Web demo entry point: not implemented yet.

The Gradio demo is tracked as its own issue and depends on the end-to-end pipeline. Until it
lands this script only says so (exit code 2) rather than pretending to work.
"""

import sys

if __name__ == "__main__":
    print("gradio_server.py: the web demo is not implemented yet; "
          "use `python -m hyvideo.conformance` to check the model parts that exist", file=sys.stderr)
    sys.exit(2)
