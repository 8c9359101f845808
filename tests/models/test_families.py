"""The published students' streaming settings (models/families.py): framecast's window excludes the sink
and the current chunk, so each family attends the number of frames its released code caches."""

import pytest

from models.config import preset
from models.families import FAMILIES, apply_family, family

# latent frames each released inference code attends per chunk, the current chunk included (the sources
# cited in models/families.py): a 21-frame global cache, LongLive's local_attn_size 12, Reward Forcing's 9
ATTENDED = {"self-forcing": 21, "causvid": 21, "longlive": 12, "rolling-forcing": 21, "reward-forcing": 9}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_attends_what_its_released_code_caches(name):
    f = family(name)
    assert f.sink_frames + f.window_frames + f.chunk_frames == ATTENDED[name]
    assert list(f.student_timesteps) == sorted(f.student_timesteps, reverse=True) and f.student_timesteps[0] == 1000


def test_apply_family_sets_the_streaming_settings_and_keeps_the_rest():
    base = preset("tiny")
    cfg = apply_family(base, "longlive")
    assert (cfg.family, cfg.stream.sink_frames, cfg.stream.window_frames, cfg.stream.chunk_frames) == ("longlive", 3, 6, 3)
    assert cfg.schedule.student_timesteps == (1000, 750, 500, 250) and cfg.schedule.shift == 5.0
    assert cfg.transformer == base.transformer and cfg.stream.fps == base.stream.fps
    with pytest.raises(KeyError, match="known: "):
        family("no-such-family")
