import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from prompts.data import build_federation
from prompts.data.folders import cifar, domainnet, image_folder, office_caltech10
from prompts.features import compute_features

CLASSES = ["back_pack", "bike", "mug"]


def _tree(root, domains, classes=CLASSES, per_class=6, size=(20, 16)):
    rng = np.random.default_rng(0)
    for d in domains:
        for c in classes:
            (root / d / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / d / c / f"{d}_{c}_{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_office_caltech10_layout_and_federation(tmp_path, random_tiny):
    root = _tree(tmp_path / "office_caltech_10", ["amazon", "caltech", "dslr", "webcam"])
    (root / "amazon" / "notes.txt").write_text("ignored")
    ds = office_caltech10(root)
    assert ds.domain_names == ["amazon", "caltech", "dslr", "webcam"] and ds.classnames == CLASSES
    assert len(ds) == 4 * 3 * 6 and np.bincount(ds.domains).tolist() == [18] * 4
    sub = office_caltech10(root, domains=["dslr", "webcam"])
    assert sub.domain_names == ["dslr", "webcam"] and len(sub) == 36
    fed = build_federation(ds, clients_per_domain=2, alpha=1.0, seed=0, min_samples=4, test_fraction=0.25)
    assert fed.n_clients == 8 and fed.classnames == CLASSES
    c = fed.clients[0]
    f = compute_features(random_tiny, c.train_images)  # paths through the backbone's PIL preprocess
    assert f.shape == (len(c.train_images), 1, random_tiny.embed_dim)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        office_caltech10(tmp_path / "nope")
    root = _tree(tmp_path / "oc", ["amazon", "dslr"])
    with pytest.raises(FileNotFoundError, match="webcam"):
        office_caltech10(root, domains=["amazon", "webcam"])
    (root / "dslr" / "mug").rename(root / "dslr" / "cup")
    with pytest.raises(ValueError, match="missing class folder"):
        office_caltech10(root)
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        image_folder(empty)


def test_domainnet_with_split_files(tmp_path):
    root = _tree(tmp_path / "domainnet", ["clipart", "sketch"], classes=["apple", "zebra"], per_class=4)
    for d in ["clipart", "sketch"]:
        lines_tr, lines_te = [], []
        for lab, c in enumerate(["apple", "zebra"]):
            files = sorted((root / d / c).iterdir())
            lines_tr += [f"{d}/{c}/{f.name} {lab}" for f in files[:3]]
            lines_te += [f"{d}/{c}/{f.name} {lab}" for f in files[3:]]
        (root / f"{d}_train.txt").write_text("\n".join(lines_tr) + "\n")
        (root / f"{d}_test.txt").write_text("\n".join(lines_te) + "\n")
    tr, te = domainnet(root, split="train"), domainnet(root, split="test")
    assert len(tr) == 12 and len(te) == 4 and tr.classnames == ["apple", "zebra"]
    assert set(tr.images).isdisjoint(te.images)
    assert all("zebra" in p for p, y in zip(tr.images, tr.labels) if y == 1)
    assert len(domainnet(root)) == 16  # no split: folder scan
    with pytest.raises(FileNotFoundError, match="split file"):
        domainnet(root, split="val")


def test_image_folder(tmp_path):
    root = _tree(tmp_path / "imgs", ["x"], classes=["cat", "dog"], per_class=3) / "x"
    ds = image_folder(root)
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert set(ds.domains.tolist()) == {0}


def _write_cifar10(root, n_per_batch=20):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 255, size=(n_per_batch, 3072), dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": rng.integers(0, 10, n_per_batch).tolist()}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    return base


def test_cifar10_from_local_files(tmp_path):
    base = _write_cifar10(tmp_path)
    ds = cifar(tmp_path, 10, train=True, verify=False)
    assert ds.images.shape == (100, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classnames[0] == "airplane" and len(ds.labels) == 100
    with open(base / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0]
    assert torch.equal(ds.images[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert len(cifar(tmp_path, 10, train=False, verify=False)) == 20
    with pytest.raises(FileNotFoundError, match="not found or corrupted"):
        cifar(tmp_path, 10, verify=True)  # re-packed files fail the MD5 check
    with pytest.raises(FileNotFoundError, match="CIFAR-100"):
        cifar(tmp_path / "none", 100)
