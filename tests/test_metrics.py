"""Confusion matrix and metrics against small hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from segkit.engine.metrics import ConfusionMatrix, format_table, metrics_from_matrix

# 3 classes, 8 pixels. (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) / (2,2) (2,0) (0,0) (1,2)
LABEL = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 1]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])


def test_matrix_rows_are_ground_truth():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    expected = torch.tensor(
        [
            [2, 1, 0],  # gt 0: two right, one predicted as 1
            [0, 2, 1],  # gt 1: two right, one predicted as 2
            [1, 0, 1],
        ]
    )  # gt 2: one right, one predicted as 0
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, expected)


def test_metrics_hand_computed():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    r = cm.compute()
    # tp = [2, 2, 1], gt = [3, 3, 2], pred = [3, 3, 2]
    iou = [2 / 4, 2 / 4, 1 / 3]
    acc = [2 / 3, 2 / 3, 1 / 2]
    dice = [4 / 6, 4 / 6, 2 / 4]
    assert r["IoU"] == pytest.approx([100 * v for v in iou])
    assert r["Acc"] == pytest.approx([100 * v for v in acc])
    assert r["Recall"] == pytest.approx([100 * v for v in acc])
    assert r["Dice"] == pytest.approx([100 * v for v in dice])
    assert r["mIoU"] == pytest.approx(100 * 4 / 9)
    assert r["mAcc"] == pytest.approx(100 * 11 / 18)
    assert r["aAcc"] == pytest.approx(100 * 5 / 8)
    assert r["num_pixels"] == 8


def test_precision_recall_fscore_asymmetric():
    # gt 0 has 4 pixels, 3 predicted 0, 1 predicted 1; gt 1 has 2 pixels, both predicted 0.
    m = torch.tensor([[3, 1], [2, 0]])
    r = metrics_from_matrix(m)
    p0, r0 = 3 / 5, 3 / 4
    assert r["Precision"][0] == pytest.approx(100 * p0)
    assert r["Recall"][0] == pytest.approx(100 * r0)
    assert r["Fscore"][0] == pytest.approx(100 * 2 * p0 * r0 / (p0 + r0))
    assert r["IoU"][0] == pytest.approx(100 * 3 / 6)
    # class 1: tp 0, predicted once (wrongly): precision 0, recall 0, IoU 0; the F-score is mmseg's
    # f_score(P, R) = 2·0·0 / (0 + 0) = NaN under the default rule (left out of mFscore), 0 under "gt"
    assert r["Precision"][1] == 0 and r["Recall"][1] == 0 and r["IoU"][1] == 0
    assert math.isnan(r["Fscore"][1])
    assert r["mPrecision"] == pytest.approx(100 * p0 / 2)
    assert r["mFscore"] == pytest.approx(100 * 2 * p0 * r0 / (p0 + r0))
    g = metrics_from_matrix(m, absent="gt")
    assert g["Fscore"][1] == 0 and g["mFscore"] == pytest.approx(100 * p0 * r0 / (p0 + r0))
    # beta = 2 weighs recall more: (1 + 4) P R / (4 P + R)
    r2 = metrics_from_matrix(m, beta=2.0)
    assert r2["Fscore"][0] == pytest.approx(100 * 5 * p0 * r0 / (4 * p0 + r0))


def test_ignore_pixels_are_skipped():
    label = LABEL.clone()
    label[0, 0] = 255  # was a correct class-0 pixel
    label[1, 3] = 255  # was gt 1 predicted 2
    cm = ConfusionMatrix(3)
    cm.update(PRED, label)
    assert torch.equal(cm.matrix, torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]]))
    # a custom ignore value; predictions under ignore may be anything, even out of range
    cm2 = ConfusionMatrix(3, ignore_index=7)
    cm2.update(torch.tensor([9, 1]), torch.tensor([7, 1]))
    assert int(cm2.matrix.sum()) == 1 and int(cm2.matrix[1, 1]) == 1


def test_absent_class_default_is_mmseg_union_rule():
    # class 2 never in the ground truth but predicted once; class 3 in neither
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    # default = mmseg: class 2 has union 1 -> IoU 0 and counted; class 3 has union 0 -> NaN
    r = cm.compute()
    assert r["IoU"][:3] == [50.0, 100.0, 0.0] and math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx(50.0)  # (50 + 100 + 0) / 3
    assert repr(cm.compute(absent="union")) == repr(r)  # repr: NaN != NaN
    # "gt": classes without ground-truth pixels are NaN in every list and left out of the means
    g = cm.compute(absent="gt")
    for key in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"):
        assert math.isnan(g[key][2]) and math.isnan(g[key][3]), key
    assert g["IoU"][:2] == pytest.approx([50.0, 100.0])
    assert g["mIoU"] == pytest.approx(75.0)  # mean over classes 0 and 1 only


def test_absent_rules_on_a_hand_made_matrix():
    """Every metric under both rules, by hand. Classes: 0, 1 ordinary; 2 predicted once but never
    in the ground truth; 3 in neither (0/0); 4 in the ground truth once but never predicted."""
    m = torch.tensor(
        [
            [3, 1, 1, 0, 0],
            [0, 2, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
        ]
    )  # tp = [3, 2, 0, 0, 0], gt = [5, 2, 0, 0, 1], pred = [4, 3, 1, 0, 0]
    nan = math.nan
    union = {
        "IoU": [3 / 6, 2 / 3, 0.0, nan, 0.0],  # tp / (gt + pred - tp); class 2: 0 / 1
        "Acc": [3 / 5, 1.0, nan, nan, 0.0],  # tp / gt
        "Dice": [6 / 9, 4 / 5, 0.0, nan, 0.0],  # 2 tp / (gt + pred)
        "Precision": [3 / 4, 2 / 3, 0.0, nan, nan],  # tp / pred; class 4: 0 / 0
        "Fscore": [2 / 3, 4 / 5, nan, nan, nan],  # 2PR / (P + R): NaN where P or R is, and 0 / 0
    }
    gt = {
        "IoU": [3 / 6, 2 / 3, nan, nan, 0.0],
        "Acc": [3 / 5, 1.0, nan, nan, 0.0],
        "Dice": [6 / 9, 4 / 5, nan, nan, 0.0],
        "Precision": [3 / 4, 2 / 3, nan, nan, 0.0],  # no prediction: 0 (zero_division=0)
        "Fscore": [2 / 3, 4 / 5, nan, nan, 0.0],  # 2 tp / (2 tp + fn + fp) = 0 / 1
    }
    # union: IoU/Dice over 4 classes (class 2 counts 0), Fscore over 2; gt: over the 3 present classes
    means_union = {"IoU": (1 / 2 + 2 / 3) / 4, "Acc": 1.6 / 3, "Dice": (2 / 3 + 4 / 5) / 4, "Fscore": 22 / 30}
    means_gt = {"IoU": (1 / 2 + 2 / 3) / 3, "Acc": 1.6 / 3, "Dice": (2 / 3 + 4 / 5) / 3, "Fscore": 22 / 45}
    for rule, per_class, means in (("union", union, means_union), ("gt", gt, means_gt)):
        r = metrics_from_matrix(m, absent=rule)
        for key, expected in (*per_class.items(), ("Recall", per_class["Acc"])):
            got = r[key]
            assert [math.isnan(v) for v in got] == [math.isnan(v) for v in expected], (rule, key)
            assert [v for v in got if not math.isnan(v)] == pytest.approx(
                [100 * v for v in expected if not math.isnan(v)]
            ), (rule, key)
        for key, value in means.items():
            assert r[f"m{key}"] == pytest.approx(100 * value), (rule, key)
        assert r["mPrecision"] == pytest.approx(100 * (3 / 4 + 2 / 3) / 3), rule  # same value here, other classes
        assert r["aAcc"] == pytest.approx(100 * 5 / 8), rule
    assert metrics_from_matrix(m)["mIoU"] == pytest.approx(100 * 7 / 24)  # the default is "union"
    cm = ConfusionMatrix(5)
    cm.matrix += m
    assert repr(cm.compute()) == repr(metrics_from_matrix(m, absent="union"))  # repr: NaN != NaN
    with pytest.raises(ValueError, match="union"):
        metrics_from_matrix(m, absent="present")


def test_empty_matrix_gives_nan():
    r = ConfusionMatrix(2).compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["aAcc"]) and r["num_pixels"] == 0


def test_streaming_equals_one_batch_and_accepts_numpy_and_batches():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, size=(3, 7, 9)).astype(np.uint8)
    label[0, :2] = 255
    pred = rng.integers(0, 5, size=(3, 7, 9))
    whole = ConfusionMatrix(5)
    whole.update(torch.from_numpy(pred), torch.from_numpy(label))
    parts = ConfusionMatrix(5)
    for b in range(3):
        parts.update(pred[b], label[b])  # numpy accepted
    assert torch.equal(whole.matrix, parts.matrix)
    valid = label != 255
    assert int(whole.matrix.sum()) == int(valid.sum())
    assert int(whole.matrix.trace()) == int((pred == label)[valid].sum())


def test_bad_input_raises():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    assert int(cm.matrix.sum()) == 0  # failed updates add nothing
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


def test_all_reduce_is_noop_without_distributed():
    assert not torch.distributed.is_initialized()
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    before = cm.matrix.clone()
    cm.all_reduce()
    assert torch.equal(cm.matrix, before)


def test_perfect_prediction_is_100():
    cm = ConfusionMatrix(3)
    cm.update(LABEL, LABEL)
    r = cm.compute()
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall"):
        assert r[key] == pytest.approx(100.0), key


def test_format_table():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]))
    text = format_table(cm.compute(), ["sky", "road", "car", "tree"])
    lines = text.splitlines()
    assert lines[0].startswith("| Class") and "IoU" in lines[0] and "Fscore" in lines[0]
    assert set(lines[1]) <= set("|-:")  # markdown separator row
    row = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines[2:] if ln.startswith("|")}
    assert row["sky"][0] == "50.00" and row["road"][0] == "100.00"
    # "car" is predicted once but never in the ground truth: IoU 0 (mmseg rule); "tree": 0/0
    assert row["car"][0] == "0.00" and row["tree"][0] == "nan"
    assert row["**mean**"][0] == "50.00"
    assert "aAcc: 75.00" in text
    with pytest.raises(ValueError):
        format_table(cm.compute(), ["only", "three", "names"])
