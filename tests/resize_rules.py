"""The two smart_resize rules the end-to-end tests must keep apart.

transformers rounds with Python's round (half to even) and scales up from the exact product;
og's stock image processor (ort-extensions ``Resize``) rounds halves away from zero and
truncates height*beta to an integer before the ceiling. Stock og only gives transformers'
answers when both rules give the same grid, so the end-to-end tests assert that first.
"""

import math


def og_smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    def round_half_away(x: float) -> int:
        return int(math.floor(x + 0.5))

    h_bar = max(factor, round_half_away(height / factor) * factor)
    w_bar = max(factor, round_half_away(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(int(height / beta) / factor) * factor
        w_bar = math.floor(int(width / beta) / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(int(height * beta) / factor) * factor
        w_bar = math.ceil(int(width * beta) / factor) * factor
    return h_bar, w_bar


def hf_smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
