"""The rolling cache's physical layout (kernels/ring_layout.py) against a plain simulation of a stream:
frames written one by one into a sink that never moves and a window that keeps only the newest."""

import pytest
import torch

from kernels.ring_layout import RingLayout, sequence_token_frames


def simulated_slots(sink: int, window: int, chunk: int, frames_written: int) -> list[int]:
    """What each slot holds after `frames_written` clean frames, by writing them in order into a list
    (the sink keeps the first `sink` frames; the window slot a frame lands in is the one the frame
    `window` before it held), then the chunk being denoised."""
    slots = [-1] * (sink + window)
    for f in range(frames_written):
        if f < sink:
            slots[f] = f
        else:
            holder = [i for i in range(sink, sink + window) if slots[i] == f - window]
            empty = [i for i in range(sink, sink + window) if slots[i] == -1]
            slots[(holder or empty)[0]] = f
    return slots + [frames_written + k for k in range(chunk)]


@pytest.mark.parametrize("sink,window,chunk", [(1, 6, 1), (3, 6, 3), (0, 4, 2), (2, 5, 3)])
def test_slots_hold_the_sink_and_the_newest_window_frames(sink, window, chunk):
    layout = RingLayout(sink, window, chunk, tokens_per_frame=2)
    for written in range(0, sink + 4 * window + 1):
        got = layout.slot_frames(written).tolist()
        assert got == simulated_slots(sink, window, chunk, written), written
        held = {f for f in got[:sink + window] if f >= 0}
        assert held == set(range(min(sink, written))) | set(range(max(sink, written - window), written))
        if written >= sink:
            assert layout.slot_of_frame(written) in range(sink, sink + window)
            assert got[layout.slot_of_frame(written)] in (-1, written - window)  # the frame it evicts


def test_token_views_repeat_each_slot_and_mark_empty_slots_invalid():
    layout = RingLayout(1, 3, 2, tokens_per_frame=4)
    assert layout.kv_len == (1 + 3 + 2) * 4 and layout.q_len == 2 * 4
    kv = layout.kv_token_frames(2)
    assert kv.tolist() == [0] * 4 + [1] * 4 + [-1] * 8 + [2] * 4 + [3] * 4
    assert layout.q_token_frames(2).tolist() == [2] * 4 + [3] * 4
    assert layout.kv_valid(2).shape == (1, 1, 1, layout.kv_len)
    assert layout.kv_valid(2).sum() == 4 * 4
    assert torch.equal(sequence_token_frames(3, 2), torch.tensor([0, 0, 1, 1, 2, 2]))
