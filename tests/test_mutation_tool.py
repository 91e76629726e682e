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
    # a generous limit where the mutant ends (a loaded machine may take seconds to start pytest), a short
    # one where it never does
    results = mutation_run.run_mutants([chosen["killed"], chosen["survived"]], [toy_copy], covered, seconds, [],
                                       work, timeout_factor=1.0, package="toypkg", timeout_floor=120.0)
    results.update(mutation_run.run_mutants([chosen["timeout"]], [toy_copy], covered, seconds, [], work,
                                            timeout_factor=1.0, package="toypkg", timeout_floor=3.0))
    assert {name: results[m.key]["status"] for name, m in chosen.items()} == \
        {"killed": "killed", "survived": "survived", "timeout": "timeout"}       # a timeout is no kill
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
               new_survivor.key: {"status": "not run by any test"}, now_killed.key: {"status": "killed"}}
    equivalent = {listed_survivor.key: "dead code", now_killed.key: "dead code"}
    text, unexplained, stale = mutation_run.report(made[:4], results, equivalent, ["toy.py"], 60.0, partial=False)
    assert unexplained == [new_survivor] and stale == [now_killed.key]
    assert "kills **2 of 4**" in text and "1 are not yet explained" in text
    assert "The other 2 survive" in text and ": 1 are equivalent (" in text
    # a reason that starts "Rounding" is counted as what it is, not as equivalent
    equivalent[new_survivor.key] = "Rounding: the same sums in another order"
    text, unexplained, _ = mutation_run.report(made[:4], results, equivalent, ["toy.py"], 60.0, partial=False)
    assert not unexplained and "1 are equivalent (the program computes the same thing) and 1 compute the same" in text


# -- timeouts are no kills, and are reviewed like survivors (issue 27) ---------------------------------

def test_a_timeout_is_not_a_kill_and_must_be_reviewed():
    made = mutation.mutants(TOY, "toy.py")[:4]
    killed, listed_timeout, unlisted_timeout, survivor = made
    results = {killed.key: {"status": "killed"}, listed_timeout.key: {"status": "timeout"},
               unlisted_timeout.key: {"status": "timeout"}, survivor.key: {"status": "survived"}}
    equivalent = {listed_timeout.key: "Only speed depends on it", survivor.key: "dead code"}
    text, unexplained, stale = mutation_run.report(made, results, equivalent, ["toy.py"], 60.0, partial=False)
    assert "kills **1 of 4**" in text and "The other 3 survive or time out (2 only made the tests too slow" in text
    assert unexplained == [unlisted_timeout] and stale == []          # a listed timeout is reviewed, not stale
    assert "| toy.py | 4 | 1 | 2 | 2 | 1 |" in text
    assert f"toy.py:{listed_timeout.line} (timeout)" in text


def test_the_committed_timeout_is_reviewed_and_the_iwae_block_size_is_not_called_equivalent():
    """Adam's chunk of one element timed out in the committed run: it is listed. MAX_ELEMENTS = 2 * 22 makes
    every IWAE block one image times one sample (44 // 784 = 0 rows, raised to 1): not equivalent."""
    listed = mutation_run.read_equivalent()
    assert "optim.py:<module>:binop:'256 * 1024'->'(256 / 1024)'#0" in listed
    for key in ("evaluate.py:<module>:binop:'2 ** 22'->'(2 * 22)'#0", "evaluate.py:<module>:drop:'2 ** 22'->'(2)'#0",
                "evaluate.py:<module>:constant:'22'->'23'#0"):
        assert key not in listed


def test_the_run_mutates_the_checker_the_network_description_and_the_registries_entries():
    assert {"gradcheck.py", "network.py", "objectives.py", "priors.py", "output_bias.py"} <= set(mutation_run.FILES)


# -- kills must not depend on test order ----------------------------------------------------------------

LEAKY = textwrap.dedent('''\
    CACHE = []


    def remember(x):
        CACHE.append(x)


    def lookup():
        return sum(CACHE) * 0
    ''')

LEAKY_TESTS = textwrap.dedent('''\
    from toypkg.leaky import CACHE, lookup, remember


    def test_remember():
        remember(1)          # and never forgets: the next test sees it
        assert CACHE


    def test_lookup():
        assert lookup() == 0
    ''')


def test_a_failure_that_needs_an_earlier_test_is_no_kill(toy_copy, tmp_path):
    (toy_copy / "toypkg" / "leaky.py").write_text(LEAKY)
    (toy_copy / "tests" / "test_leaky.py").write_text(LEAKY_TESTS)
    made = {(m.function, m.before, m.after): m for m in mutation.mutants(LEAKY, "leaky.py")}
    order_only = made[("lookup", "sum(CACHE) * 0", "(sum(CACHE))")]     # 0 alone, 1 after test_remember
    real = made[("lookup", "sum(CACHE) * 0", "(sum(CACHE) / 0)")]      # fails alone too
    first, second = "tests/test_leaky.py::test_remember", "tests/test_leaky.py::test_lookup"
    covered = {("leaky.py", order_only.line): {first, second}}
    seconds = {first: 0.01, second: 0.02}                             # test_remember runs first
    work = tmp_path / "work"
    work.mkdir()
    results = mutation_run.run_mutants([order_only, real], [toy_copy], covered, seconds, [], work,
                                       timeout_factor=1.0, package="toypkg", timeout_floor=120.0)
    assert results[order_only.key]["status"] == mutation_run.ORDER_DEPENDENT
    assert results[order_only.key]["killed_by"] == second and results[order_only.key]["alone"] == "passes"
    assert results[real.key]["status"] == "killed" and results[real.key]["alone"] == "fails"
    assert (toy_copy / "toypkg" / "leaky.py").read_text() == LEAKY
    text, unexplained, _ = mutation_run.report([order_only, real], results, {}, ["leaky.py"], 1.0, partial=True)
    assert "kills **1 of 2**" in text and unexplained == [order_only]


# -- the checkout is never written, and bad arguments are refused before any work ---------------------------

def test_a_mutant_of_a_file_outside_the_copy_is_never_written(toy_copy, tmp_path):
    """--files with an absolute path once made the mutant's path that very file of the checkout."""
    checkout = tmp_path / "checkout" / "toypkg" / "toy.py"
    checkout.parent.mkdir(parents=True)
    checkout.write_text(TOY)
    mutant = mutation.mutants(TOY, str(checkout))[0]
    with pytest.raises(ValueError, match="outside the copy"):
        mutation_run.run_mutants([mutant], [toy_copy], {(str(checkout), mutant.line): {"t"}}, {}, [], tmp_path,
                                 timeout_factor=1.0, package="toypkg")
    assert checkout.read_text() == TOY


def test_files_are_resolved_to_names_inside_the_package(tmp_path, monkeypatch):
    package = Path(mutation_run.ROOT) / mutation_run.PACKAGE
    assert mutation_run.package_file("optim.py") == "optim.py"
    assert mutation_run.package_file(str(package / "optim.py")) == "optim.py"      # an absolute path to it
    monkeypatch.chdir(mutation_run.ROOT)
    assert mutation_run.package_file("numpyvae/optim.py") == "optim.py"
    elsewhere = tmp_path / "numpyvae" / "optim.py"                                  # another checkout's file
    elsewhere.parent.mkdir()
    elsewhere.write_text("x = 1\n")
    for name in (str(elsewhere), "../setup.cfg", "/etc/passwd", ".", "nope.py", "__pycache__"):
        with pytest.raises(ValueError, match="is not a .py file of"):
            mutation_run.package_file(name)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "argument --workers: must be 1 to"),
    (["--workers", "many"], "argument --workers: expected an integer"),
    (["--timeout-factor", "-1"], "argument --timeout-factor: must be a positive number"),
    (["--timeout-factor", "nan"], "argument --timeout-factor: must be a positive number"),
    (["--files", "/etc/passwd"], "is not a .py file of"),
    (["--files", "../setup.cfg"], "is not a .py file of"),
    (["--out", "README.md"], "is a file, not a directory"),
    (["--out", "README.md/results"], "is not a directory this run can write in"),
])
def test_bad_arguments_are_refused_in_one_line_before_any_work(argv, message, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the run started working on a bad argument")
    monkeypatch.setattr(mutation_run, "pretend_to_be_a_test_process", no_work)
    monkeypatch.setattr(mutation_run, "baseline", no_work)
    monkeypatch.setattr(mutation_run, "make_copy", no_work)
    monkeypatch.chdir(mutation_run.ROOT)
    with pytest.raises(SystemExit) as stop:
        mutation_run.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and err.count("\n") == 1, err


def test_no_git_checkout_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(mutation_run, "ROOT", tmp_path)          # an unpacked sdist: no .git
    with pytest.raises(ValueError, match="not a git checkout|cannot run git"):
        mutation_run.tracked_files()


SMALL_TOY = textwrap.dedent('''\
    def scaled_sum(xs):
        total = 0
        for x in xs:
            total += 2.0 * x
        return total
    ''')


def test_a_whole_run_on_a_toy_checkout_writes_its_report_and_never_the_checkout(tmp_path, monkeypatch, capsys):
    """main() end to end (baseline, trace, mutants, report) on a small git checkout of a toy package."""
    import json
    import subprocess
    repo = tmp_path / "repo"
    (repo / "toypkg").mkdir(parents=True)
    (repo / "toypkg" / "__init__.py").write_text("")
    (repo / "toypkg" / "toy.py").write_text(SMALL_TOY)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_toy.py").write_text("from toypkg.toy import scaled_sum\n\n\n"
                                                "def test_scaled_sum():\n    assert scaled_sum([1.0, 2.0]) == 6.0\n")
    (repo / "equivalent.md").write_text("# none\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    for name, value in {"ROOT": repo, "PACKAGE": "toypkg", "FILES": ["toy.py"], "RESULTS": repo / "results",
                        "EQUIVALENT": repo / "equivalent.md"}.items():
        monkeypatch.setattr(mutation_run, name, value)
    code = mutation_run.main(["--workers", "1", "--files", str(repo / "toypkg" / "toy.py")])
    assert (repo / "toypkg" / "toy.py").read_text() == SMALL_TOY                  # never written
    results = json.loads((repo / "results" / "mutation.json").read_text())
    statuses = [r["status"] for r in results]
    assert results and set(statuses) <= {"killed", "survived", "timeout", mutation_run.ORDER_DEPENDENT}
    killed = statuses.count("killed")
    assert f"kills **{killed} of {len(results)}**" in (repo / "results" / "mutation.md").read_text()
    assert code == (0 if killed == len(results) else 1)
    capsys.readouterr()


def test_every_test_that_reads_committed_results_is_left_out_of_the_run():
    """The run's copy holds no benchmarks/results/ (make_copy), so a test that reads a committed report fails there
    before any mutant, and the whole run stops: each such test must be deselected (or its file excluded)."""
    import ast
    tests = Path(__file__).parent
    deselected = {arg for arg in mutation_run.PYTEST_ARGS if "::" in arg}
    readers = []
    for path in sorted(tests.glob("test_*.py")):
        if path.name in mutation_run.EXCLUDED_TESTS:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                source = ast.get_source_segment(path.read_text(), node)
                if '"results"' in source and "benchmarks" in source:
                    readers.append(f"tests/{path.name}::{node.name}")
    assert readers and set(readers) <= deselected, set(readers) - deselected
