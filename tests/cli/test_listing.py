from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.cli.listing import families

runner = CliRunner()


def test_list_shows_every_registered_entry():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for registry in families().values():
        for name in registry.names():
            assert name in result.output
    assert "boundary + class" in result.output  # the no-instance subset
    assert "2048 ch, stride 32" in result.output
    assert "kmax=1, kmin=None, alpha=0.7" in result.output


def test_list_filters_by_pattern():
    result = runner.invoke(app, ["list", "backbones", "vgg*"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "vgg16-pool5" in result.output
    assert "resnet50" not in result.output


def test_unknown_family_is_a_one_line_error_with_exit_code_2():
    result = runner.invoke(app, ["list", "backbone"])
    assert result.exit_code == 2
    assert "unknown family 'backbone'" in result.output
    assert "Traceback" not in result.output


def test_version_is_an_option_too():
    from prm_bench import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"prm-bench {__version__}"


def test_every_help_reads_as_help_not_as_code_notes():
    """A command's docstring notes its parameter count for the layout test after a "\\f";
    no help page or command list shows it, and lines are wrapped, not kept as typed."""
    import typer.main

    def commands(group, path):
        for name, command in getattr(group, "commands", {}).items():
            yield [*path, name]
            yield from commands(command, [*path, name])

    every = [[], *commands(typer.main.get_command(app), [])]
    assert ["data", "shapes"] in every and ["run"] in every
    for path in every:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        assert "parameters:" not in result.output, path
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    assert "terms, galleries, baselines" in " ".join(top.replace("│", " ").split())
