"""The captioner's maps (``ShowAttendTell.mixer_maps``, drawn by ``compare_maps`` for the mixer study's
context mixers): the greedy caption's alpha averaged over its words."""

import pytest
import torch
from test_captioning import tiny_model


@pytest.mark.parametrize("mixer", ["soft", "hard", "focal_modulation"])
def test_caption_map_is_the_mean_alpha_of_the_greedy_caption(mixer):
    net = tiny_model(mixer=mixer, seed=1)
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    maps = net.mixer_maps(x, max_len=6)
    greedy = net.beam_search(x, beam_size=1, max_len=6)
    h, w = (int(v) for v in greedy["grid"])
    assert list(maps) == ["caption"] and maps["caption"].shape == (3, h, w)
    torch.testing.assert_close(maps["caption"].flatten(1).sum(1), torch.ones(3, dtype=torch.float64))
    for i in range(3):  # by hand: the mean of the first `lengths[i]` steps' alpha
        n = int(greedy["lengths"][i])
        expected = greedy["alphas"][i, :n].mean(0).view(h, w)
        torch.testing.assert_close(maps["caption"][i], expected)
    assert set(net.mixer_map_legends()) == {"caption"}


def test_a_mixer_that_does_not_read_the_grid_draws_no_map():
    net = tiny_model(mixer="none")
    assert net.mixer_maps(torch.rand(2, 1, 16, 16, dtype=torch.float64)) == {}
    assert net.mixer_map_legends() == {}
