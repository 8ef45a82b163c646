"""Fuzzing the trust boundary: ``restore`` and ``inspect_snapshot`` on structured hostile input.

The contract: given ANY bytes, both either succeed or raise a ``SnapshotError`` subclass; no other
exception, no hang, no crash of the process, at most 200 bytes of peak memory per input byte plus
50 MB; nothing the data names is called (the target's functions and user hooks record themselves,
``print`` is a recorder); a restored generator dropped with ``runtime.detach`` runs no user code and
prints no "Exception ignored" noise.

Short mode (this file, a few seconds): a few thousand inputs of ``tests/fuzz/grammar.py`` in one
worker subprocess (a C-level hang or a crash cannot be caught in-process), with a per-call timer in
the worker and a no-progress watchdog in the parent; ``DG_FUZZ_INPUTS=50000`` runs more. Then one
test per adversarial family found by the attack review, each building its inputs explicitly: they
are the regression tests of that review, named after what they guard. The long mode is
``python -m tests.fuzz.run --inputs N --workers K --seed S --max-seconds T``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzz import grammar  # noqa: E402
from tests.fuzz.grammar import DICT, FROZENSET, LIST, SET, TUPLE  # noqa: E402
from tests.fuzz.run import run_campaign  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fuzz driver watches POSIX worker processes")

INPUTS = int(os.environ.get("DG_FUZZ_INPUTS", "1000"))
SEED = int(os.environ.get("DG_FUZZ_SEED", "20240601"))
OLD_ITERTOOLS = sys.version_info < (3, 12)  # where product & co. are rebuilt from their arguments


def _report(campaign: Any) -> str:
    return campaign.table()


# --------------------------------------------------------------------------- short mode: random inputs

def test_random_grammar_inputs_honour_the_contract(tmp_path):
    """A few thousand inputs of every family (no 1 MB ones: the family tests below have those)."""
    campaign = run_campaign(inputs=INPUTS, workers=1, seed=SEED, max_seconds=max(60.0, INPUTS / 50),
                            findings=tmp_path / "findings", timeout=4.0, large=0.0, interrupt=3.0, quiet=True)
    assert campaign.stats["inputs"] == INPUTS, _report(campaign)
    assert not campaign.keys, _report(campaign)


def test_the_grammar_is_deterministic_and_mostly_small():
    first = [grammar.generate(seed) for seed in range(SEED, SEED + 300)]
    assert first == [grammar.generate(seed) for seed in range(SEED, SEED + 300)]
    sizes = sorted(len(data) for _, data in first)
    assert sizes[len(sizes) * 9 // 10] < 4096
    assert {family for family, _ in first} >= {"tree", "kinds", "bytes", "msgpack", "frame", "classes"}


def test_every_registered_kind_name_is_in_the_grammar():
    from runtime.values import kinds
    kinds.load_standard()
    assert set(kinds.BY_NAME) <= set(grammar.kind_names())
    assert set(grammar.KNOWN_KINDS) - set(kinds.BY_NAME) <= {f"itertools.{n}" for n in ("pairwise", "batched")}


# --------------------------------------------------------------------------- the adversarial families

# name -> input; every family test below names the inputs it owns. They all run in one campaign
# (two worker subprocesses), so a hang costs its timeout once and a crash loses nothing else.
FAMILIES: dict[str, Callable[[], bytes]] = {
    # shared tuple DAGs T(k) = (T(k-1), T(k-1)): hashing walks 2**k leaves
    "dag-set": lambda: grammar.dag_in_set(64, "set"),
    "dag-frozenset": lambda: grammar.dag_in_set(64, "frozenset"),
    "dag-dict-key": lambda: grammar.dag_in_set(64, "dictkey"),
    "dag-enum-value": lambda: grammar.dag_in_set(64, "enum"),
    "dag-counter-key": lambda: grammar.dag_in_set(64, "counter"),
    "dag-equal-pair-in-set": lambda: grammar.dag_in_set(40, "sorted-set"),
    # 200,000-deep chains built through refs (the decoder never nests, hashing and dropping recurse)
    "chain-tuple-in-set": lambda: grammar.deep_chain(200_000, "tuple", "set"),
    "chain-tuple-in-frozenset": lambda: grammar.deep_chain(20_000, "tuple", "frozenset"),
    "chain-tuple-dict-key": lambda: grammar.deep_chain(20_000, "tuple", "dictkey"),
    "chain-tuple-enum-value": lambda: grammar.deep_chain(20_000, "tuple", "enum"),
    "chain-frozenset-in-set": lambda: grammar.deep_chain(20_000, "frozenset", "set"),
    "chain-map-dropped": lambda: grammar.deep_chain(20_000, "map", "plain"),
    "chain-enumerate-dropped": lambda: grammar.deep_chain(20_000, "enumerate", "plain"),
    "chain-zip-dropped": lambda: grammar.deep_chain(20_000, "zip", "plain"),
    "chain-deque-dropped": lambda: grammar.deep_chain(20_000, "deque", "plain"),
    "chain-exception-args-inspected": lambda: grammar.deep_chain(20_000, "exc-args", "plain"),
    "chain-exception-context-dropped": lambda: grammar.deep_chain(20_000, "exc-context", "plain"),
    "chain-cell-inspected": lambda: grammar.deep_chain(20_000, "cell", "plain"),
    # itertools rebuilt from their arguments (3.10/3.11) read a map of print/evil to its end
    "itertools-product-map-print": lambda: grammar.eager_itertools("product", ("builtin", "print")),
    "itertools-permutations-map-evil": lambda: grammar.eager_itertools("permutations", ("ref", grammar.T + "evil")),
    "itertools-combinations-map-class": lambda: grammar.eager_itertools("combinations", ("ref", grammar.T + "Plain")),
    "itertools-cwr-map-print-range": lambda: grammar.eager_itertools("combinations_with_replacement",
                                                                     ("builtin", "print"), "range"),
    "itertools-product-endless-count": lambda: grammar.eager_itertools("product", ("builtin", "len"), "count"),
    # numbers whose construction or rendering costs more than linear time
    "fraction-huge": lambda: grammar.huge_fraction(400_000),
    "decimal-huge": lambda: grammar.huge_decimal(300_000),
    # memory per input byte: 2-byte empty containers
    "many-empty-lists": lambda: grammar.many_empty(100_000, LIST),
    "many-empty-sets": lambda: grammar.many_empty(100_000, SET),
    "many-empty-frozensets": lambda: grammar.many_empty(100_000, FROZENSET),
    "many-empty-dicts": lambda: grammar.many_empty(100_000, DICT),
    "many-empty-tuples": lambda: grammar.many_empty(100_000, TUPLE),
    # int keys k * (2**61 - 1): all hash to 0
    "same-hash-dict-keys": lambda: grammar.same_hash_keys(40_000, "dict"),
    "same-hash-set": lambda: grammar.same_hash_keys(40_000, "set"),
    "same-hash-frozenset": lambda: grammar.same_hash_keys(40_000, "frozenset"),
    # ints over 4,300 digits where the inspector renders them
    **{f"bigint-rendered-{where}": (lambda where=where: grammar.bigint_rendered(2000, where))
       for where in ("plain", "range-iterator", "fraction", "exception", "held-generator-line",
                     "instance-attribute-name")},
    # enum / namedtuple / instance / exception nodes naming the target's classes and their hooks
    **{f"class-{which}": (lambda which=which: grammar.module_class_node(which))
       for which in ("enum-missing", "enum-hash", "namedtuple-meta", "namedtuple", "set-of-hashy", "shadowed-slot",
                     "exception-setattr", "oserror-setattr", "module-getattr", "class-descriptor",
                     "metaclass-getattr", "enumerate-iter", "map-iter", "islice-index", "tee-eq")},
    "class-saved-exception-setattr": grammar.saved_exception_setattr,
    # what the inspector renders from heads it does not check
    "inspector-layout-names-int": lambda: grammar.inspector_layout(5),
    "inspector-layout-names-none": lambda: grammar.inspector_layout(None),
    "inspector-frees-names-int": lambda: grammar.inspector_frees(7),
}


@pytest.fixture(scope="module")
def family_results(tmp_path_factory) -> dict[str, list[str]]:
    """Run every family input once; ``{input name: [finding lines]}`` (an empty list: it held)."""
    directory = tmp_path_factory.mktemp("fuzz-families")
    names = list(FAMILIES)
    inputs_file = directory / "inputs.msgpack"
    inputs_file.write_bytes(msgpack.packb([[name, FAMILIES[name]()] for name in names], use_bin_type=True))
    campaign = run_campaign(inputs=len(names), workers=2, seed=0, max_seconds=300.0, findings=directory / "findings",
                            timeout=5.0, large=0.0, interrupt=4.0, inputs_file=inputs_file, quiet=True)
    results: dict[str, list[str]] = {name: [] for name in names}
    for key, entry in campaign.keys.items():
        for family in entry["families"]:
            f = entry["finding"]
            results.setdefault(family, []).append(f"{key}: {f['message'][:200]}")
    missing = [name for name in names if not campaign.stats[f"family {name}"]]
    for name in missing:
        results[name].append("not run (the campaign stopped early)")
    return results


def _assert_held(results: dict[str, list[str]], *names: str) -> None:
    failed = {name: results[name] for name in names if results[name]}
    assert not failed, "\n".join(f"{name}:\n    " + "\n    ".join(lines) for name, lines in failed.items())


def _names(prefix: str) -> list[str]:
    return [name for name in FAMILIES if name.startswith(prefix)]


def test_hashing_shared_tuple_dags_is_bounded(family_results):
    """Sets, frozensets, dict keys, enum values and Counter keys holding T(64) (2**64 leaves)."""
    _assert_held(family_results, *_names("dag-"))


def test_deep_tuple_chains_in_sets_and_keys_do_not_crash(family_results):
    """A 200,000-deep tuple chain hashed by a set crashed the process (20,000 deep: by a dict key, a
    frozenset, an enum lookup; a frozenset chain in a set)."""
    _assert_held(family_results, "chain-tuple-in-set", "chain-tuple-in-frozenset", "chain-tuple-dict-key",
                 "chain-tuple-enum-value", "chain-frozenset-in-set")


def test_deep_chains_of_iterators_and_containers_are_dropped_safely(family_results):
    """Long chains of maps, enumerates, zips, deques or exception contexts each holding the previous one."""
    _assert_held(family_results, "chain-map-dropped", "chain-enumerate-dropped", "chain-zip-dropped",
                 "chain-deque-dropped", "chain-exception-context-dropped")


def test_the_inspector_renders_deep_exception_and_cell_chains(family_results):
    _assert_held(family_results, "chain-exception-args-inspected", "chain-cell-inspected")


def test_itertools_rebuilt_from_arguments_never_consume_a_map(family_results):
    """product/permutations/combinations(map(print | evil | a class, ...)) call nothing; an endless
    argument (count) does not hang. On 3.12+ these kinds are refused outright."""
    _assert_held(family_results, *_names("itertools-"))


def test_huge_fraction_and_decimal_are_not_slow(family_results):
    _assert_held(family_results, "fraction-huge", "decimal-huge")


def test_many_empty_containers_stay_within_the_memory_bound(family_results):
    """100,000 empty sets (the dearest per wire byte), lists, frozensets, tuples and maps: 1-2 bytes each
    on the wire."""
    _assert_held(family_results, *_names("many-empty-"))


def test_int_keys_with_one_hash_do_not_go_quadratic(family_results):
    """40,000 keys k * (2**61 - 1) in a dict, a set, a frozenset (quadratic insertion: about 10 s)."""
    _assert_held(family_results, *_names("same-hash-"))


def test_the_inspector_renders_ints_over_4300_digits(family_results):
    _assert_held(family_results, *_names("bigint-rendered-"))


def test_nodes_naming_target_classes_run_none_of_their_code(family_results):
    """enum _missing_, __hash__/__eq__ of a set element or enum value, a metaclass __getattr__, an
    exception __setattr__, a property shadowing a slot, a class attribute descriptor, the module's
    __getattr__, __iter__ and __index__ reached through enumerate, map and islice, __eq__ through tee's
    arguments, __setattr__ of a saved exception whose __context__ restore puts back."""
    _assert_held(family_results, *_names("class-"))


def test_the_inspector_survives_layouts_and_closure_names_of_the_wrong_type(family_results):
    _assert_held(family_results, *_names("inspector-"))


def test_every_family_input_has_a_test():
    covered = set()
    for prefix in ("dag-", "chain-", "itertools-", "many-empty-", "same-hash-", "bigint-rendered-", "class-",
                   "inspector-", "fraction-", "decimal-"):
        covered.update(_names(prefix))
    assert covered == set(FAMILIES)
