def test_every_method_declares_what_it_needs():
    from prm_bench.instances.methods import METHODS

    assert METHODS.names() == ["prm", "cam-rect", "cam-ellipse", "cam-proposal"]
    needs = {n: METHODS.get(n).needs_proposals for n in METHODS.names()}
    assert needs == {"prm": True, "cam-rect": False, "cam-ellipse": False, "cam-proposal": True}
    assert [n for n in METHODS.names() if METHODS.get(n).uses_retrieval] == ["prm"]
