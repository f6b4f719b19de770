"""The domain IS of the real twin canvases at 100 images per split (as ``test/is_real`` scores them) and at
1,000 per split (as ``test/is`` scores 10,000 samples in 10 splits): IS takes the marginal per split, so
fewer images per split read lower. PROTOCOL.md amendment 15 compares the pilot's samples with the real
canvases at the same split size. Needs the domain scorer a SAGAN run on this data cached (the pilot's).

    python experiments/mixer_study/pilot/sagan/is_real_per_split.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from matched_widths import compose  # noqa: E402

from attnbench.metrics import domain_scorer as ds  # noqa: E402
from attnbench.metrics import gan as gm  # noqa: E402
from attnbench.train import instantiate  # noqa: E402

cfg = compose("mixer_study_sagan", ["model.mixer=none"])
dm = instantiate(cfg.data)
dm.prepare_data()
dm.setup("fit")
dm.setup("test")
key = "TwinDigitsDataModule-16px-1ch-10cls-n5000-s0-v3"  # test/scorer_key of the pilot's metrics.json
scorer, info = ds.load_scorer(Path(cfg.paths.cache_dir).expanduser() / "domain_scorer" / f"{key}.pt")
scorer.eval()
for name, x in (("test", dm.test_set.tensors[0]), ("train", dm.train_set.tensors[0])):
    _, logits = gm.score(scorer, x.float())
    for per in (100, 1000):
        k = len(logits) // per
        m = gm.inception_score(k)
        m.update(logits[: k * per], torch.arange(k * per))
        mean, std = m.compute()
        print(f"{name}: {k} splits of {per}: IS {float(mean):.3f} ± {float(std):.3f}")
