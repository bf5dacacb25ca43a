"""streamswap: real-time face swapping for live video."""

import os as _os

__version__ = "0.1.0"

# The most pixels any still image may decode to (50 MP: above 8K UHD's 33 MP). OpenCV reads
# its own decoder cap from the environment once, when its library loads, so it is set here,
# before any streamswap module imports cv2: the decoder itself then refuses a file whose
# real size is larger, whatever its header told our parser (io.images checks both). A lower
# cap the user set is kept.
DECODER_MAX_PIXELS = 50_000_000
_cap = _os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
if not (_cap.isdigit() and 0 < int(_cap) <= DECODER_MAX_PIXELS):
    _os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(DECODER_MAX_PIXELS)
del _cap
