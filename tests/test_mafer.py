"""MAFER as published: the step-1 curriculum and resolution draw, the step-1 loss, the frozen
teacher, the class weights, the FER fine-tune's starts, and a k-fold whose starting models never
saw a held-out row."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from assembled_fixture import make_assembled
from mrfer.data.degrade import degrade
from mrfer.data.scales import DownsampleParams
from mrfer.data.shards import load_xy, read_stats
from mrfer.nets import build, checkpoint
from mrfer.train import base, cr, distill, face, kfold, losses, loop
from mrfer.train.loop import WithFeatures
from params_fixture import section


def cr_cfg(**overrides):
    return section("cr_pretrain", cr.CrPretrainParams, **overrides)


def test_curriculum_p_grows_every_p_every_images_and_caps():
    images = np.array([1, 999, 1000, 1001, 2999, 3000, 20000])
    p = cr.curriculum_p(images, p_start=0.1, p_step=0.1, p_every=1000, p_max=1.0)
    assert np.allclose(p, [0.1, 0.1, 0.2, 0.2, 0.3, 0.4, 1.0])
    assert np.allclose(cr.curriculum_p(np.array([35000 * 3]), 0.1, 0.1, 35000, 1.0), [0.4])   # MAFER's N


def test_resolution_draw_matches_the_code_on_a_seeded_example():
    """Per image: degrade when u0 < p_i, short side 2 ** int(3 + 5 * u1) (the code's draw), kept
    when that is not below the face size."""
    cfg = cr_cfg(p_start=0.5, p_step=0.25, p_every=4, p_max=1.0, resolutions=[8, 16, 32, 64, 128])
    draw = cr.ResolutionDraw(cfg, images_per_epoch=8, face_side=64, gen=torch.Generator().manual_seed(5))
    got = draw(8, epoch=0)
    u = torch.rand(8, 2, generator=torch.Generator().manual_seed(5)).numpy()
    p = [0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 1.0]           # images 1..8, +0.25 at images 4 and 8
    side = [2 ** int(3 + 5 * v) for v in u[:, 1]]
    expected = [f"{s}px" if d < pi and s < 64 else None for d, pi, s in zip(u[:, 0], p, side)]
    assert got == expected
    assert draw.seen == 8
    draw(8, epoch=3)                                             # a new epoch restarts the count from it
    assert draw.seen == 4 * 8


def test_step1_loss_is_identity_ce_plus_lambda_mse_to_the_teacher():
    torch.manual_seed(0)
    student = build("baseline_cnn", num_classes=5, in_chans=1, image_size=32, width=0.125)
    teacher = copy.deepcopy(student).eval()
    with torch.no_grad():                                        # make the two differ
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    student.eval()
    x_hr, x_lr = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    labels = torch.tensor([0, 3, 4])
    loss, logits = losses.cross_resolution_loss(WithFeatures(student), teacher, x_hr, x_lr, labels, 0.1)
    f_s, f_t = student.features(x_lr), teacher.features(x_hr)
    z = student.head(f_s)
    ce = float(np.mean([-(z[i, labels[i]] - torch.logsumexp(z[i], 0)).detach().item() for i in range(3)]))
    mse = float(((f_s - f_t) ** 2).mean().detach())
    assert loss.item() == pytest.approx(ce + 0.1 * mse, rel=1e-5)
    assert torch.allclose(logits, z)


def test_class_weights_change_the_loss_as_computed_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = loop.class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([1 - 3 / 6, 1 - 1 / 6, 1 - 2 / 6]))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 1.0]])
    y = torch.tensor([0, 1, 2])
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), y]
    by_hand = float((w[y] * nll).sum() / w[y].sum())
    assert F.cross_entropy(logits, y, weight=w).item() == pytest.approx(by_hand)
    assert by_hand != pytest.approx(float(nll.mean()))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An assembled FER set, and a face model + cr model trained on other 'identities'."""
    root = tmp_path_factory.mktemp("mafer")
    data = make_assembled(root / "fer")
    faces = make_assembled(root / "ids", seed=1)   # three other "people"
    face_cfg = section("face_pretrain", face.FacePretrainParams, arch_options={"width": 0.125}, epochs=1,
                       batch_size=16, device="cpu")
    face.fit_face(face_cfg, faces, root / "face.pt", root / "face.json", live_dir=None, resume=None)
    cr.fit_cr(cr_cfg(epochs=1, batch_size=16, device="cpu", p_every=8), faces, root / "face.pt", root / "cr.pt",
              root / "cr.json", live_dir=None, resume=None)
    return root, data, faces


def test_cr_teacher_stays_frozen_and_student_learns(models):
    root, _, _ = models
    face_state = checkpoint.load(root / "face.pt")["state_dict"]
    cr_state = checkpoint.load(root / "cr.pt")["state_dict"]
    assert any(not torch.equal(face_state[k], cr_state[k]) for k in face_state if k.endswith("weight"))
    meta = checkpoint.load(root / "cr.pt")["meta"]
    assert meta["stage"] == "cr_pretrain" and meta["classes"] == checkpoint.load(root / "face.pt")["meta"]["classes"]
    # the teacher: frozen and untouched by a step (cr_step with a tiny batch)
    student, _ = checkpoint.load_model(root / "face.pt", "cpu")
    teacher, _ = checkpoint.load_model(root / "face.pt", "cpu")
    teacher.eval().requires_grad_(False)
    before = copy.deepcopy(teacher.state_dict())
    cfg = cr_cfg(device="cpu")
    draw = cr.ResolutionDraw(cfg, 4, 32, torch.Generator().manual_seed(0))
    xb, yb = torch.randint(0, 255, (4, 32, 32, 1), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    loss, _ = cr.cr_step(WithFeatures(student), xb, yb, 0, teacher=teacher, mean=torch.zeros(1, 1, 1, 1) + 100,
                         std=torch.ones(1, 1, 1, 1) * 50, augment_cfg=cfg.augment, augment_gen=torch.Generator(),
                         draw=draw, kernel="bilinear", weight=0.1, class_weight=None)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_validation_faces_of_step1_are_at_val_resolution(models):
    _, _, faces = models
    val_x, _ = load_xy(faces, "val")
    low = degrade(np.ascontiguousarray(val_x), "8px", "bilinear")
    assert low.shape == val_x.shape and not np.array_equal(low, val_x)


def test_pretrain_base_starts_from_the_face_model(models, tmp_path):
    root, data, _ = models
    cfg = section("pretrain_base", base.PretrainBaseParams, arch_options={"width": 0.125}, epochs=1, batch_size=32,
                  device="cpu")
    stats = read_stats(data)
    model, start, ancestry = base.start_model(cfg, root / "face.pt", len(stats["classes"]), stats,
                                              torch.device("cpu"), True)
    assert {d["name"] for d in ancestry["datasets"]} == {"ids"}   # the face model saw identities only
    face_state = checkpoint.load(root / "face.pt")["state_dict"]
    state = model.state_dict()
    assert all(torch.equal(state[k], face_state[k]) for k in face_state if not k.startswith("head."))
    assert state["head.weight"].shape[0] == len(stats["classes"])
    assert not torch.equal(state["head.weight"], face_state["head.weight"])   # a fresh expression head
    assert "face.pt" in start
    with pytest.raises(Exception, match="params ask for arch baseline_cnn .*'width': 0.25"):
        bad = section("pretrain_base", base.PretrainBaseParams, arch_options={"width": 0.25, "dropout": 0.0})
        base.start_model(bad, root / "face.pt", len(stats["classes"]), stats, torch.device("cpu"), True)


def test_init_values_are_checked_before_any_work():
    with pytest.raises(Exception, match="(?s)init.*must be one of face, scratch, imported or an mrfer model file"):
        section("pretrain_base", base.PretrainBaseParams, init="imagenet")
    with pytest.raises(Exception, match="(?s)weights.*set exactly when init is 'imported'"):
        section("pretrain_base", base.PretrainBaseParams, init="scratch",
                weights={"kind": "vggface", "path": "x.pth"})


@pytest.mark.parametrize("protocol", ["subject", "image"])
def test_folds_never_train_on_their_test_rows(models, protocol, monkeypatch, tmp_path):
    """For every fold, every image that trains or validates a start (the face/cr models: other
    people; the fold's base for distill) or the fold's models is not one of the fold's test rows."""
    root, data, faces = models
    seen = []
    real_finetune, real_distill = kfold.finetune, distill.distill_steps

    def spy_finetune(model, cfg, data, *args, **kwargs):
        seen.append((data.train[0], data.val[0]))
        return real_finetune(model, cfg, data, *args, **kwargs)

    def spy_distill(cfg, student, teacher, data, *args, **kwargs):
        seen.append((data.train[0], data.val[0]))
        return real_distill(cfg, student, teacher, data, *args, **kwargs)

    monkeypatch.setattr(kfold, "finetune", spy_finetune)
    monkeypatch.setattr(distill, "distill_steps", spy_distill)
    train_cfg = section("kfold_test", kfold.KfoldTestParams).train
    fold_distill = train_cfg.distill.model_copy(update={"step1_epochs": 1, "step2_epochs": 0, "batch_size": 16,
                                                        "device": "cpu"})
    train_cfg = train_cfg.model_copy(update={"protocol": protocol, "epochs": 1, "batch_size": 16, "device": "cpu",
                                             "val_fraction": 0.3, "distill": fold_distill})
    downsample = DownsampleParams(scales=["x2"], kernel="bicubic_aa", chunk=512)
    identity_rows = {x.tobytes() for split in ("train", "val") for x in load_xy(faces, split)[0]}
    for fold in range(3):
        seen.clear()
        files = kfold.FoldFiles(data, root / "face.pt", root / "cr.pt", tmp_path / f"f{fold}.json",
                                tmp_path / f"c{fold}.json")
        kfold.run_fold(train_cfg, 1, fold, files, downsample, 3)
        x, _, role = kfold.fold_rows(data, fold, protocol, train_cfg.val_fraction, 1)
        test_rows = {row.tobytes() for row in x[role == "test"]}
        assert test_rows and len(seen) == 3          # base, multires, distill
        for train_x, val_x in seen:
            used = {row.tobytes() for row in train_x} | {row.tobytes() for row in val_x}
            assert not used & test_rows
        assert not identity_rows & test_rows          # the face / cr models' rows: other people
