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
