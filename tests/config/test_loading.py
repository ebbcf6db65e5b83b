import pytest
import yaml
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import ConfigError, load_plan, parse_override
from prm_bench.config.keys import stage_keys


def write(path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_grid_product_zip_and_variants():
    plan = load_plan(
        {
            "grid": {
                "backbone.name": ["resnet10t", "test_resnet"],
                "zip": {"train.lr": [0.1, 0.01], "train.epochs": [1, 2]},
                "variants": {"legacy": {"retrieval.resize_mode": "legacy"}, "modern": {}},
            }
        }
    )
    assert len(plan.cells) == 2 * 2 * 2
    assert plan.axes == ["backbone.name", "train.lr", "train.epochs", "variant"]
    first = plan.cells[0]
    assert first.axes == {
        "backbone.name": "resnet10t",
        "train.lr": 0.1,
        "train.epochs": 1,
        "variant": "legacy",
    }
    assert first.config.retrieval.resize_mode == "legacy"
    assert plan.cells[1].config.retrieval.resize_mode == "bicubic"
    assert {(c.config.train.lr, c.config.train.epochs) for c in plan.cells} == {(0.1, 1), (0.01, 2)}


def test_overrides_read_values_as_yaml():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("eval.iou_thresholds=[0.5, 0.7]") == (
        ["eval", "iou_thresholds"],
        [0.5, 0.7],
    )
    assert parse_override("retrieval.nms_threshold=null") == (["retrieval", "nms_threshold"], None)
    plan = load_plan({}, ["backbone.name=resnet18", "retrieval.merge=false"])
    assert plan.cells[0].config.backbone.name == "resnet18"
    assert plan.cells[0].config.retrieval.merge is False
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        parse_override("train.lr")


def test_extends_merges_and_resolves_paths_relative_to_the_file(tmp_path):
    parent = {
        "data": {"root": "data/x"},
        "train": {"epochs": 7, "lr": 0.5},
        "grid": {"train.seed": [0, 1]},
    }
    write(tmp_path / "base.yaml", parent)
    (tmp_path / "sub").mkdir()
    child = write(
        tmp_path / "sub" / "child.yaml", {"extends": "../base.yaml", "train": {"lr": 0.1}}
    )
    plan = load_plan(child)
    assert plan.name == "child"
    assert len(plan.cells) == 2  # the parent's grid is inherited
    config = plan.cells[0].config
    assert (config.train.epochs, config.train.lr) == (7, 0.1)
    assert config.data.root == (tmp_path / "sub" / "data" / "x").resolve()
    replaced = write(
        tmp_path / "sub" / "own.yaml", {"extends": "../base.yaml", "grid": {"train.lr": [1, 2, 3]}}
    )
    assert load_plan(replaced).axes == ["train.lr"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"backbone": {"nmae": "resnet50"}}, r"backbone\.nmae: unknown key"),
        ({"backbone": {"name": "resnet5O"}}, "did you mean 'resnet50'"),
        ({"grid": {"train.lrr": [1, 2]}}, r"\[cell train\.lrr=1\]: train\.lrr: unknown key"),
        (
            {"grid": {"stimulation.name": ["peak", "gapp"]}},
            r"unknown stimulation 'gapp'; did you mean 'gap'",
        ),
        (
            {"stimulation": {"name": "gap", "options": {"upsample": 2}}},
            "stimulation 'gap' has no option upsample",
        ),
        ({"retrieval": {"terms": "no-instanse"}}, "did you mean 'no-instance'"),
        ({"train": {"lr": -1}}, r"train\.lr: Input should be greater than 0 \(got -1\)"),
        ({"grid": {"train.lr": 0.1}}, r"grid\.train\.lr must be a non-empty list"),
        ({"grid": {"lr": [1]}}, "grid axis 'lr' must be section.key"),
    ],
)
def test_mistakes_are_one_clear_error_naming_file_and_key(tmp_path, content, message):
    path = write(tmp_path / "bad.yaml", content)
    with pytest.raises(ConfigError, match=message) as info:
        load_plan(path)
    assert str(tmp_path / "bad.yaml") in str(info.value)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_plan(broken)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="forms a cycle"):
        load_plan(loop)


def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    path = write(tmp_path / "bad.yaml", {"backbone": {"name": "resnet5O"}})
    result = CliRunner().invoke(app, ["run", path], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "did you mean 'resnet50'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["run", path, "--set", "backbone.name=resnet50", "--dry-run"],
                                env={"COLUMNS": "300"})  # fmt: skip
    # the backbone is fine now; the next check is the data, which nobody asked to generate
    assert result.exit_code == 2 and "no shapes dataset at" in result.output, result.output


def test_run_names_cannot_leave_the_runs_directory(tmp_path):
    assert load_plan({"run": {"name": "ablation-1.b"}}).name == "ablation-1.b"
    for bad in ("../outside", "a/b", ".hidden"):
        with pytest.raises(ConfigError, match=r"run\.name: String should match pattern"):
            load_plan({"run": {"name": bad}})


def test_a_list_of_sub_grids_is_their_union_without_repeats():
    plan = load_plan(
        {
            "grid": [
                {"stimulation.name": ["peak", "gap"]},
                {"retrieval.terms": ["full", "no-class"]},
                {"stimulation.name": ["gap"]},  # a repeated assignment is dropped
            ]
        }
    )
    assert plan.axes == ["stimulation.name", "retrieval.terms"]
    assert [c.axes for c in plan.cells] == [
        {"stimulation.name": "peak"},
        {"stimulation.name": "gap"},
        {"retrieval.terms": "full"},
        {"retrieval.terms": "no-class"},
    ]
    # the peak cell and the full cell are the same configuration: they share every stage
    assert stage_keys(plan.cells[0].config) == stage_keys(plan.cells[2].config)


@pytest.mark.parametrize("name", ["quick", "full", "backbones", "voc2012", "claims"])
def test_every_shipped_ablation_config_validates(name):
    plan = load_plan(f"ablations/{name}.yaml")
    assert plan.name == name and plan.cells
    keys = {stage_keys(c.config)["train"] for c in plan.cells}
    if name != "backbones":  # there every cell is its own backbone and seed
        assert len(keys) < len(plan.cells)  # cells share their trainings


def test_voc2012_mirrors_the_original_code():
    plan = load_plan("ablations/voc2012.yaml")
    peak_cells = [c.config for c in plan.cells if c.config.stimulation.name == "peak"]
    assert peak_cells
    for config in peak_cells:
        assert config.stimulation.options == {"upsample": 8}  # training forward x8
        assert config.infer.upsample == 1  # inference without sub-pixel locating
        assert config.infer.peak_threshold == 30 and config.infer.peak_threshold_mode == "absolute"
        assert config.retrieval.resolution == "input" and config.retrieval.resize_mode == "legacy"
        train = config.train
        assert (train.optimizer, train.lr, train.backbone_lr, train.batch_size) == (
            "sgd",
            0.01,
            1e-4,
            16,
        )
        assert (train.momentum, train.weight_decay, train.epochs) == (0.9, 1e-4, 20)


def test_the_sub_pixel_factors_are_separate_axes_of_the_gap_study():
    """gap.yaml flips train x8 / infer x1 (the original) to x8/x8, x1/x1 and x1/x8; the
    x1 trainings are shared by two variants: 3 training keys per seed, not 4."""
    plan = load_plan("ablations/gap.yaml")
    chosen = [c for c in plan.cells if c.axes["variant"].startswith(("subpixel", "released"))]
    factors = {
        (c.config.stimulation.options.get("upsample", 1), c.config.infer.upsample) for c in chosen
    }
    assert factors == {(8, 1), (8, 8), (1, 1), (1, 8)}  # the original's is (8, 1)
    assert len({c.keys["train"] for c in chosen}) == 2 * 3  # two training factors x 3 seeds
    assert len({c.keys["infer"] for c in chosen}) == 4 * 3


@pytest.mark.parametrize(
    "grid", [{"run.device": ["cpu", "cuda"]}, {"run.threads": [1, 2]}, [{"run.jobs": [1, 2]}]]
)
def test_a_grid_over_run_settings_is_refused_in_one_line(grid):
    with pytest.raises(ConfigError, match=r"grid axis 'run\.\w+': run settings .* whole run") as e:
        load_plan({"grid": grid})
    assert "\n" not in str(e.value)


def test_run_settings_belong_to_the_plan_and_no_cell_or_key():
    plan = load_plan(
        {"run": {"device": "cpu", "threads": 1, "jobs": 2}, "grid": {"train.seed": [0, 1]}}
    )
    assert (plan.run.device, plan.run.threads, plan.run.jobs) == ("cpu", 1, 2)
    assert all("run" not in cell.config.model_dump() for cell in plan.cells)
    other = load_plan({"run": {"device": "auto", "threads": 4}, "grid": {"train.seed": [0, 1]}})
    assert [c.keys for c in plan.cells] == [c.keys for c in other.cells]
    # the command line's settings go on top of the file's, None keeping the file's
    assert plan.with_run(device="cuda", jobs=None).run.jobs == 2
    assert plan.with_run(device="cuda").run.device == "cuda"
    with pytest.raises(ValueError, match="device"):
        plan.with_run(device="tpu")
    with pytest.raises(ConfigError, match=r"run\.device: Input should be 'auto', 'cpu' or"):
        load_plan({"run": {"device": "gpu"}})


def test_cells_carry_the_keys_of_their_stages():
    plan = load_plan({"grid": {"retrieval.terms": ["full", "no-class"], "train.seed": [0, 1]}})
    for cell in plan.cells:
        assert cell.keys == stage_keys(cell.config)
    assert len({c.keys["train"] for c in plan.cells}) == 2
    assert len({c.keys["retrieve"] for c in plan.cells}) == 4


def test_command_line_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    """Issue 24 item 5: `--set data.root=s` looked in <config folder>/s."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.yaml").write_text("data: {root: in-file}\nproposals: {root: props}\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    plan = load_plan(folder / "c.yaml", ["data.root=s", "data.eval_split=lists/val.txt"])
    data = plan.cells[0].config.data
    assert data.root == work / "s" and data.eval_split == str(work / "lists" / "val.txt")
    assert plan.cells[0].config.proposals.root == folder / "props"  # the file's own: its folder
    assert load_plan(folder / "c.yaml").cells[0].config.data.root == folder / "in-file"
    assert (
        load_plan(folder / "c.yaml", ["data.eval_split=val"]).cells[0].config.data.eval_split
        == "val"
    )


def test_the_config_reference_is_current_and_every_key_has_a_meaning():
    """Issue 24 item 13: docs/config.md is generated from the models; a new key without a
    meaning fails here, and so does an edit of a model the file does not show."""
    from pathlib import Path

    from prm_bench.config.reference import MEANINGS, keys, reference_markdown

    names = [key for key, _ in keys()]
    assert sorted(names) == sorted(MEANINGS), set(names) ^ set(MEANINGS)
    document = Path(__file__).parents[2] / "docs" / "config.md"
    assert document.read_text() == reference_markdown(), (
        "rerun python -m prm_bench.config.reference"
    )
