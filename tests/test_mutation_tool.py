"""The mutation run's own machinery (benchmarks/mutation), on a toy package: it makes the mutants it
promises, judges them right, and always puts the file back. The run itself is not part of the suite."""
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "mutation"))
import mutants as mutation  # noqa: E402
import run as mutation_run  # noqa: E402

TOY = textwrap.dedent('''\
    """A toy module."""
    SCALE = 2.0


    def scaled_sum(xs, ws=None):
        """Docstrings are never mutated."""
        if xs is None:
            raise ValueError("guard clauses are input checks, never mutated")
        total = 0
        for x in xs:
            total += SCALE * x
        return total


    def check_positive(x):
        return x > 0


    def spin(n):
        while n != 0:
            n -= 1
        return n
    ''')

TOY_TESTS = textwrap.dedent('''\
    from toypkg.toy import scaled_sum, spin


    def test_scaled_sum():
        assert scaled_sum([1.0, 2.0]) == 6.0


    def test_spin():
        assert spin(3) == 0
    ''')


def keys(source, **kwargs):
    return [m.key for m in mutation.mutants(source, "toy.py", **kwargs)]


def test_the_mutants_are_the_promised_slips_and_nothing_else():
    made = {(m.function, m.operator, m.before, m.after) for m in mutation.mutants(TOY, "toy.py")}
    assert ("scaled_sum", "binop", "total += SCALE * x", "total -= SCALE * x") in made
    assert ("scaled_sum", "statement", "total += SCALE * x", "pass") in made
    assert ("scaled_sum", "binop", "SCALE * x", "(SCALE / x)") in made
    assert ("scaled_sum", "drop", "SCALE * x", "(x)") in made
    assert ("<module>", "constant", "2.0", "4.0") in made
    assert ("spin", "compare", "n != 0", "(n == 0)") in made
    # the guard clause, the docstrings and check_* functions are input checks and prose, not math
    assert not [m for m in made if m[0] == "check_positive" or "raise" in m[2] or "xs is None" in m[2]]
    assert not [m for m in made if "Docstrings" in m[2] or "toy module" in m[2]]


def test_keys_do_not_depend_on_line_numbers():
    """The reviewed list of equivalent mutants names them by key: an edit elsewhere must not rename them."""
    shifted = TOY.replace('"""A toy module."""', '"""A toy module.\n\nNow longer."""')
    assert keys(shifted) == keys(TOY)
    assert len(set(keys(TOY))) == len(keys(TOY))


def test_a_buffer_name_is_swapped_only_for_one_requested_with_the_same_shape():
    source = textwrap.dedent('''\
        def step(ws, b):
            eps = buffer(ws, "eps", (b, 3))
            mask = buffer(ws, "mask", (b, 3), bool)
            z = buffer(ws, "z", (b, 3))
            return eps, mask, z
        ''')
    names = mutation.buffer_names(source)
    assert names == ["eps", "mask", "z"]
    requests = {"eps": {((4, 3), "float64")}, "mask": {((4, 3), "bool")}, "z": {((4, 3), "float64")}}
    partners = mutation.buffer_partners(names, requests)
    assert partners == {"eps": "z", "z": "eps"}              # a bool buffer of that shape is another buffer
    swaps = [(m.before, m.after) for m in mutation.mutants(source, "toy.py", partners=partners)
             if m.operator == "buffer"]
    assert swaps == [('"eps"', "'z'"), ('"z"', "'eps'")]


@pytest.fixture
def toy_copy(tmp_path):
    copy = tmp_path / "copy0"
    (copy / "toypkg").mkdir(parents=True)
    (copy / "toypkg" / "__init__.py").write_text("")
    (copy / "toypkg" / "toy.py").write_text(TOY)
    (copy / "tests").mkdir()
    (copy / "tests" / "test_toy.py").write_text(TOY_TESTS)
    return copy


def test_killed_survived_and_timeout_are_told_apart_and_the_file_is_always_restored(toy_copy, tmp_path):
    made = {(m.function, m.before, m.after): m for m in mutation.mutants(TOY, "toy.py")}
    chosen = {"killed": made[("scaled_sum", "SCALE * x", "(SCALE / x)")],    # scaled_sum([1, 2]) = 2.5
              "survived": made[("scaled_sum", "0", "1")],                    # total = 1: seen only by test_spin, below
              "timeout": made[("spin", "n -= 1", "pass")]}                   # spin(3) never ends
    tests = {"killed": "tests/test_toy.py::test_scaled_sum", "survived": "tests/test_toy.py::test_spin",
             "timeout": "tests/test_toy.py::test_spin"}
    covered = {("toy.py", m.line): {tests[name]} for name, m in chosen.items()}
    seconds = {"tests/test_toy.py::test_scaled_sum": 0.01, "tests/test_toy.py::test_spin": 0.01}
    work = tmp_path / "work"
    work.mkdir()
    results = mutation_run.run_mutants(list(chosen.values()), [toy_copy], covered, seconds, [], work,
                                       timeout_factor=1.0, package="toypkg", timeout_floor=5.0)
    assert {name: results[m.key]["status"] for name, m in chosen.items()} == \
        {"killed": "killed", "survived": "survived", "timeout": "killed (timeout)"}
    assert results[chosen["killed"].key]["killed_by"] == "tests/test_toy.py::test_scaled_sum"
    assert (toy_copy / "toypkg" / "toy.py").read_text() == TOY         # restored after each mutant


def test_a_mutant_no_test_runs_survives_without_a_run(toy_copy, tmp_path):
    mutant = mutation.mutants(TOY, "toy.py")[0]
    results = mutation_run.run_mutants([mutant], [toy_copy], {}, {}, [], tmp_path, timeout_factor=1.0,
                                       package="toypkg")
    assert results[mutant.key] == {"status": "not run by any test", "tests": 0, "seconds": 0.0}


def test_the_reviewed_list_is_read_by_reason(tmp_path):
    listed = tmp_path / "equivalent.md"
    listed.write_text("# Equivalent\n\nprose\n\n## only speed changes\n- `a.py:f:constant:'1'->'2'#0`\n"
                      "- `a.py:g:drop:'x + y'->'(x)'#0`\n\n## dead code\n- `b.py:h:unary:'-x'->'(x)'#0`\n")
    assert mutation_run.read_equivalent(listed) == {"a.py:f:constant:'1'->'2'#0": "only speed changes",
                                                    "a.py:g:drop:'x + y'->'(x)'#0": "only speed changes",
                                                    "b.py:h:unary:'-x'->'(x)'#0": "dead code"}


def test_the_report_names_unexplained_survivors_and_stale_entries():
    """The run fails on a survivor nobody has reviewed, and on a listed 'equivalent' that a test now kills."""
    made = mutation.mutants(TOY, "toy.py")
    killed, listed_survivor, new_survivor, now_killed = made[:4]
    results = {killed.key: {"status": "killed"}, listed_survivor.key: {"status": "survived"},
               new_survivor.key: {"status": "not run by any test"}, now_killed.key: {"status": "killed (timeout)"}}
    equivalent = {listed_survivor.key: "dead code", now_killed.key: "dead code"}
    text, unexplained, stale = mutation_run.report(made[:4], results, equivalent, ["toy.py"], 60.0, partial=False)
    assert unexplained == [new_survivor] and stale == [now_killed.key]
    assert "kills **2 of 4**" in text and "1 are not yet explained" in text
    assert "The other 2 survive" in text and ": 1 are equivalent (" in text
    # a reason that starts "Rounding" is counted as what it is, not as equivalent
    equivalent[new_survivor.key] = "Rounding: the same sums in another order"
    text, unexplained, _ = mutation_run.report(made[:4], results, equivalent, ["toy.py"], 60.0, partial=False)
    assert not unexplained and "1 are equivalent (the program computes the same thing) and 1 compute the same" in text
