"""The captioner's maps (``ShowAttendTell.mixer_maps``, drawn by ``compare_maps`` for the mixer study's
context mixers): the greedy caption's alpha averaged over its words."""

import pytest
import torch
from test_captioning import tiny_model


@pytest.mark.parametrize("mixer", ["soft", "hard", "focal_modulation"])
def test_caption_map_is_the_mean_alpha_of_the_greedy_caption(mixer):
    """Checked on another code path: the teacher-forced forward pass fed the greedy caption gives the alpha
    of each of its words; the map is their mean (hard attention: its expected-context read)."""
    net = tiny_model(mixer=mixer, seed=1)
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    maps = net.mixer_maps(x, max_len=6)
    greedy = net.beam_search(x, beam_size=1, max_len=6)
    h, w = (int(v) for v in greedy["grid"])
    assert list(maps) == ["caption"] and maps["caption"].shape == (3, h, w)
    torch.testing.assert_close(maps["caption"].flatten(1).sum(1), torch.ones(3, dtype=torch.float64))
    for i in range(3):
        n = int(greedy["lengths"][i])
        words = greedy["tokens"][i : i + 1, :n]
        captions = torch.cat([torch.full((1, 1), net.start_id), words], dim=1)
        forced = net(x[i : i + 1], captions)["alphas"][0]  # [n, L]: the alpha that emitted each word
        torch.testing.assert_close(maps["caption"][i], forced.mean(0).view(h, w))
    assert set(net.mixer_map_legends()) == {"caption"}


def test_hard_attention_evaluated_by_argmax_shows_the_locations_it_reads():
    net = tiny_model(mixer="hard", seed=2, hard_eval="argmax")
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    m = net.mixer_maps(x, max_len=6)["caption"].flatten(1)
    greedy = net.beam_search(x, beam_size=1, max_len=6)
    for i in range(2):
        n = int(greedy["lengths"][i])
        read = greedy["alphas"][i, :n].argmax(-1)
        expected = torch.bincount(read, minlength=m.shape[1]).double() / n
        torch.testing.assert_close(m[i], expected)
    assert "argmax" in net.mixer_map_legends()["caption"][0]


def test_a_mixer_that_does_not_read_the_grid_draws_no_map():
    net = tiny_model(mixer="none")
    assert net.mixer_maps(torch.rand(2, 1, 16, 16, dtype=torch.float64)) == {}
    assert net.mixer_map_legends() == {}
