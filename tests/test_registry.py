import pytest

from prm_bench.registry import Registry, UnknownNameError, keyword_options


def make() -> Registry:
    registry: Registry = Registry("widget", "Widgets for tests.")

    @registry.register()
    def alpha() -> str:
        return "a"

    @registry.register("beta-two")
    def beta() -> str:
        return "b"

    registry.add("gamma", lambda: "g")
    return registry


def test_register_and_get_return_the_registered_objects():
    registry = make()
    assert registry.get("alpha")() == "a"
    assert registry.get("beta-two")() == "b"
    assert registry.get("gamma")() == "g"
    assert list(registry) == ["alpha", "beta-two", "gamma"]
    assert len(registry) == 3
    assert "alpha" in registry and "delta" not in registry


def test_names_filters_with_fnmatch_patterns():
    registry = make()
    assert registry.names() == ["alpha", "beta-two", "gamma"]
    assert registry.names("*a") == ["alpha", "gamma"]
    assert registry.names("beta-*") == ["beta-two"]
    assert registry.names("z*") == []


def test_duplicate_names_are_refused():
    registry = make()
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        registry.add("alpha", lambda: "again")


def test_unknown_name_suggests_close_matches_and_lists_choices():
    registry = make()
    with pytest.raises(UnknownNameError) as info:
        registry.get("alpah")
    message = str(info.value)
    assert "unknown widget 'alpah'" in message
    assert "did you mean 'alpha'" in message
    assert "alpha, beta-two, gamma" in message


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as info:
        make().get("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_prefix_resolver_builds_entries_on_demand():
    registry = make()
    registry.add_prefix("up:", lambda rest: rest.upper())
    assert registry.get("up:abc") == "ABC"
    assert "up:anything" in registry
    assert "or up:<name>" in registry.unknown_message("nope")
    with pytest.raises(ValueError, match="prefix 'up:' is already registered"):
        registry.add_prefix("up:", str)


def test_temporarily_registers_for_the_block_only_even_when_it_fails():
    registry = Registry("thing")
    with registry.temporarily("a", 1) as entry:
        assert entry == 1 and registry.get("a") == 1 and "a" in registry
    assert "a" not in registry
    with pytest.raises(RuntimeError), registry.temporarily("b", 2):
        raise RuntimeError("inside")
    assert "b" not in registry and len(registry) == 0


def test_entries_describe_themselves_or_by_their_options_and_docstring():
    registry = Registry("thing")

    def scaled(maps, *, factor: float = 2.0, mode: str = "a"):
        """Scale the maps.

        More words."""

    class Spec:
        def describe(self):
            return "own", "words"

    registry.add("scaled", scaled)
    registry.add("spec", Spec())
    assert registry.describe("scaled") == ("factor=2.0, mode='a'", "Scale the maps.")
    assert registry.describe("spec") == ("own", "words")
    assert keyword_options(scaled) == {"factor": 2.0, "mode": "a"}


def test_temporarily_stands_in_for_an_entry_and_puts_it_back():
    registry = Registry("thing")
    registry.add("a", 1)
    with registry.temporarily("a", 2):
        assert registry.get("a") == 2
    assert registry.get("a") == 1


def _home(tmp_path, monkeypatch, name: str, body: str) -> str:
    """A module `name` on sys.path, for a registry's `home`."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_declared_entries_are_listed_without_their_home_and_built_from_it(tmp_path, monkeypatch):
    import sys

    registry = Registry("gadget", home=_home(tmp_path, monkeypatch, "gadget_home", "x = 1\n"))
    registry.declare("twice", "factor=2", "Double it.")
    registry.declare_prefix("up:")
    assert registry.names() == ["twice"] and "twice" in registry and "up:abc" in registry
    assert registry.describe("twice") == ("factor=2", "Double it.")
    assert "did you mean 'twice'" in registry.unknown_message("twicee")
    assert "or up:<name>" in registry.unknown_message("nope")
    assert "gadget_home" not in sys.modules  # nothing was imported to answer those
    with pytest.raises(RuntimeError, match="gadget_home does not implement gadget 'twice'"):
        registry.get("twice")  # imported, but it registers nothing

    def twice(x, *, factor=2):
        """Double it."""
        return x * factor

    registry.add("twice", twice)
    registry.add_prefix("up:", str.upper)
    assert registry.get("twice")(3) == 6 and registry.get("up:abc") == "ABC"


def test_the_home_module_is_imported_on_the_first_get(tmp_path, monkeypatch):
    registry = Registry("gizmo", home="gizmo_home")
    monkeypatch.setitem(__import__("sys").modules, "registry_under_test", registry)
    _home(tmp_path, monkeypatch, "gizmo_home", (
        "from registry_under_test import add\n"
        "def half(x):\n    '''Halve it.'''\n    return x / 2\n"
        "add('half', half)\n"
    ))  # fmt: skip
    registry.declare("half", "-", "Halve it.")
    assert registry.get("half")(3) == 1.5


def test_an_entry_that_differs_from_its_declaration_is_refused():
    registry = Registry("thing", home="anywhere")
    registry.declare("scaled", "factor=2.0", "Scale the maps.")

    def scaled(maps, *, factor: float = 3.0):
        """Scale the maps."""

    with pytest.raises(ValueError, match=r"declared as \('factor=2.0'.*describes itself as"):
        registry.add("scaled", scaled)
    with pytest.raises(ValueError, match="already registered"):
        registry.declare("scaled", "-", "again")
    with pytest.raises(ValueError, match="no home module"):
        Registry("plain").declare("a", "-", "")


def test_every_declaration_of_the_package_matches_its_implementation():
    """The catalogues (`model.catalogue`) describe the stimulations without torch; each
    describes its entry exactly as the implemented entry describes itself."""
    from prm_bench.cli.listing import families
    from prm_bench.registry import describe_entry

    declared = 0
    for registry in families().values():
        for name in registry.declared():
            assert registry.describe(name) == describe_entry(registry.get(name)), name
            declared += 1
    assert declared >= 5
