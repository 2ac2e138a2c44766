"""LightGBM Booster -> ONNX graph whose output equals ``booster.predict(X, raw_score=True)``.

Built from ``booster.dump_model()`` with ``onnx.helper`` alone (no onnxmltools)::

    features float32 (batch, F) -> Cast double -> zero band to 0.0 -> [+ derived columns]
      -> ai.onnx.ml TreeEnsemble (opset 5, double, SUM) -> Cast float32 -> Reshape -> score (batch,)

Why double. ``TreeEnsemble`` requires split values of the input's type, so a float32 graph
could keep comparisons exact (``x <= t64`` iff ``x <= the largest float32 <= t64``) but would sum
float32-rounded leaves in float32. Casting the float32 input to double is exact and LightGBM
also widens its input to double, so each node compares the very values LightGBM compares with the
float64 thresholds verbatim; leaves stay float64 and ONNX Runtime sums them in double. The only
rounding is the final cast: the score is within one float32 ulp of LightGBM's float64 raw score
(tree order may differ, ~1e-16 relative). Opset 5 also gives ``BRANCH_MEMBER`` for categorical
sets; it needs an ONNX Runtime implementing ai.onnx.ml opset 5 (checked on 1.31). The init score
(``boost_from_average``) is already folded into the first tree's leaves by LightGBM.

Zero band. LightGBM's dense predict reads ``|x| <= kZeroThreshold`` (``1e-35f``; -0.0, denormals)
as 0.0 before any tree sees it, so the graph does too; a threshold can be ``-1e-35`` itself.

Numerical splits: ``x <= threshold`` goes left = the ONNX true branch (``BRANCH_LEQ``); by
``missing_type``, NaN goes where LightGBM sends it (``nodes_missing_value_tracks_true``):

* ``"None"``: NaN is read as 0.0, so it goes left iff ``0.0 <= threshold``.
* ``"NaN"``: NaN goes to the ``default_left`` side.
* ``"Zero"``: NaN and 0.0 go to the ``default_left`` side. A node cannot test "is 0.0" besides
  its comparison, so such a feature gets a derived column where 0.0 is replaced by NaN.

Categorical splits (``"=="``, threshold ``"1||3||7"``; in the set goes left). LightGBM takes
``static_cast<int>(x)`` (truncation: -0.5 is category 0, 2.7 is 2) and sends negatives right; on
x86-64 NaN and values beyond int range also become a negative int, so they go right whatever the
missing type (LightGBM on other CPUs may read NaN as category 0; we follow x86-64). The derived
column per categorical feature holds ``floor(|x|)`` where ``-1 < x < 2**31`` and -1 elsewhere,
NaN included: LightGBM's category or a value in no set. So ``BRANCH_MEMBER`` only sees integers,
which also keeps ONNX Runtime's internal bitset for small categories exact.

Not supported (``NotImplementedError``): linear trees, multiclass boosters. Random forests
(``average_output``) are summed, as LightGBM's raw score is. Inputs are what LightGBM's predict
would get as a dense array (pandas categories as their codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import lightgbm
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ranker import __version__

_ML = "ai.onnx.ml"
_OPSETS = [helper.make_opsetid("", 21), helper.make_opsetid(_ML, 5)]
_BRANCH_LEQ, _BRANCH_MEMBER = 0, 6
_K_ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM: `const double kZeroThreshold = 1e-35f;`
# Tree-input columns: the raw features, then derived ones keyed by (kind, feature).
_RAW, _CAT, _ZERO = 0, 1, 2


@dataclass
class _Ensemble:
    """The ``nodes_*`` / ``leaf_*`` attribute lists of one TreeEnsemble node."""

    columns: list[tuple[int, int]] = field(default_factory=list)  # (kind, feature) per node
    modes: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    tracks_true: list[int] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leafs: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leafs: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)  # NaN-terminated sets, in node order
    roots: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def add_node(self, column: tuple[int, int], mode: int, split: float, tracks: bool) -> int:
        self.columns.append(column)
        self.modes.append(mode)
        self.splits.append(split)
        self.tracks_true.append(int(tracks))
        for ids in (self.true_ids, self.true_leafs, self.false_ids, self.false_leafs):
            ids.append(0)  # filled in by link() once the children exist
        return len(self.modes) - 1

    def link(self, parent: int, left: bool, child: int, is_leaf: bool) -> None:
        # The left child is the true branch for both "<=" and "in set".
        ids, leafs = (
            (self.true_ids, self.true_leafs) if left else (self.false_ids, self.false_leafs)
        )
        ids[parent], leafs[parent] = child, int(is_leaf)

    def add_leaf(self, leaf: dict[str, Any]) -> int:
        if "leaf_coeff" in leaf:
            raise _linear_tree_error()
        self.leaf_weights.append(float(leaf["leaf_value"]))
        return len(self.leaf_weights) - 1

    def add_split(self, node: dict[str, Any]) -> int:
        feature, decision = int(node["split_feature"]), node["decision_type"]
        missing, default_left = node["missing_type"], bool(node["default_left"])
        if decision == "==":
            # Derived column: category code or -1, never NaN, so tracks_true is irrelevant.
            self.members.extend([float(c) for c in str(node["threshold"]).split("||")])
            self.members.append(float("nan"))
            return self.add_node((_CAT, feature), _BRANCH_MEMBER, 0.0, False)
        if decision != "<=":
            raise NotImplementedError(f"unknown LightGBM decision_type {decision!r}")
        threshold = float(node["threshold"])
        if missing == "None":  # NaN is read as 0.0, which goes left (true) when 0.0 <= threshold
            return self.add_node((_RAW, feature), _BRANCH_LEQ, threshold, threshold >= 0.0)
        if missing == "NaN":
            return self.add_node((_RAW, feature), _BRANCH_LEQ, threshold, default_left)
        if missing == "Zero":  # the derived column holds NaN for NaN and the zero band
            return self.add_node((_ZERO, feature), _BRANCH_LEQ, threshold, default_left)
        raise NotImplementedError(f"unknown LightGBM missing_type {missing!r}")

    def add_tree(self, root: dict[str, Any]) -> None:
        if "leaf_value" in root:
            # A single-leaf tree: one dummy node whose both branches reach the same leaf.
            dummy = self.add_node((_RAW, 0), _BRANCH_LEQ, 0.0, False)
            leaf = self.add_leaf(root)
            self.link(dummy, True, leaf, True)
            self.link(dummy, False, leaf, True)
            self.roots.append(dummy)
            return
        self.roots.append(len(self.modes))
        # Iterative walk: LightGBM trees can be deeper than Python's recursion limit.
        stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, True)]
        while stack:
            node, parent, left = stack.pop()
            is_leaf = "leaf_value" in node
            index = self.add_leaf(node) if is_leaf else self.add_split(node)
            if parent >= 0:
                self.link(parent, left, index, is_leaf)
            if not is_leaf:
                stack.append((node["right_child"], index, False))
                stack.append((node["left_child"], index, True))


def _linear_tree_error() -> NotImplementedError:
    return NotImplementedError(
        "linear_tree boosters are not supported: their leaves hold linear models that "
        "TreeEnsemble cannot express; retrain with linear_tree=False to export to ONNX"
    )


# Internal tensor names get a prefix so that no user-chosen input or output name collides.
_PREFIX = "lgbm_"


def _const(name: str, value: Any, dtype: type[np.generic]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), _PREFIX + name)


def _op(op_type: str, inputs: list[str], outputs: list[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(
        op_type, [_PREFIX + i for i in inputs], [_PREFIX + o for o in outputs], **attrs
    )


def _tree_input(
    input_name: str, derived: dict[int, list[int]], nodes: list[onnx.NodeProto]
) -> tuple[str, list[onnx.TensorProto]]:
    """Append the nodes that build the TreeEnsemble input; return its name and the constants."""
    inits = [
        _const("zero", 0.0, np.float64),
        _const("zero_band", _K_ZERO_THRESHOLD, np.float64),
        _const("minus_one", -1.0, np.float64),
        _const("int_limit", 2.0**31, np.float64),
        _const("nan", np.nan, np.float64),
    ]
    # LightGBM's predict reads |x| <= kZeroThreshold as 0.0 (its dense-row reader keeps only
    # NaN and |x| > kZeroThreshold): do the same for every feature. NaN stays NaN (false compare).
    nodes += [
        helper.make_node("Cast", [input_name], [_PREFIX + "x64"], to=TensorProto.DOUBLE),
        _op("Abs", ["x64"], ["x_abs"]),
        _op("LessOrEqual", ["x_abs", "zero_band"], ["x_tiny"]),
        _op("Where", ["x_tiny", "zero", "x64"], ["x"]),
    ]
    parts = ["x"]
    if derived[_CAT]:
        # LightGBM's static_cast<int>(x) where that is >= 0, else -1, which is in no set; NaN
        # compares false, so it becomes -1 too. floor(|x|) is trunc(x) for x > -1.
        inits.append(_const("cat_index", derived[_CAT], np.int64))
        nodes += [
            _op("Gather", ["x", "cat_index"], ["cat_raw"], axis=1),
            _op("Abs", ["cat_raw"], ["cat_abs"]),
            _op("Floor", ["cat_abs"], ["cat_trunc"]),
            _op("Greater", ["cat_raw", "minus_one"], ["cat_above"]),
            _op("Less", ["cat_raw", "int_limit"], ["cat_below"]),
            _op("And", ["cat_above", "cat_below"], ["cat_valid"]),
            _op("Where", ["cat_valid", "cat_trunc", "minus_one"], ["cat_codes"]),
        ]
        parts.append("cat_codes")
    if derived[_ZERO]:
        # missing_type "Zero": 0.0 (the whole zero band by now) becomes NaN, so that the node's
        # NaN direction (its default side) applies to it as well as to NaN.
        inits.append(_const("zero_index", derived[_ZERO], np.int64))
        nodes += [
            _op("Gather", ["x", "zero_index"], ["zero_raw"], axis=1),
            _op("Equal", ["zero_raw", "zero"], ["zero_is_zero"]),
            _op("Where", ["zero_is_zero", "nan", "zero_raw"], ["zero_as_nan"]),
        ]
        parts.append("zero_as_nan")
    if len(parts) == 1:
        return _PREFIX + "x", inits
    nodes.append(_op("Concat", parts, ["tree_input"], axis=1))
    return _PREFIX + "tree_input", inits


def booster_to_onnx(
    booster: lightgbm.Booster,
    *,
    input_name: str = "features",
    output_name: str = "score",
    num_iteration: int | None = None,
) -> onnx.ModelProto:
    """Export ``booster`` to ONNX: float32 ``(batch, F)`` in, float32 raw scores ``(batch,)`` out.

    ``num_iteration`` follows ``Booster.predict``: None means the best iteration when the booster
    has one (early stopping), else all; ``<= 0`` means all.
    """
    if input_name == output_name or any(n.startswith(_PREFIX) for n in (input_name, output_name)):
        raise ValueError(f"input and output names must differ and not start with {_PREFIX!r}")
    if booster.params.get("linear_tree"):
        raise _linear_tree_error()
    if num_iteration is None:
        num_iteration = booster.best_iteration  # 0 when there is none, which means "all"
    dump = booster.dump_model(num_iteration=num_iteration)
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise NotImplementedError("multiclass boosters are not supported (one score per row)")
    if not dump["tree_info"]:
        raise ValueError("the booster has no trees to export")
    num_features = booster.num_feature()

    ens = _Ensemble()
    for tree in dump["tree_info"]:
        ens.add_tree(tree["tree_structure"])

    # Resolve (kind, feature) to tree-input columns: raw features, then derived columns.
    col: dict[tuple[int, int], int] = {(_RAW, f): f for f in range(num_features)}
    derived = {kind: sorted({f for k, f in ens.columns if k == kind}) for kind in (_CAT, _ZERO)}
    for kind in (_CAT, _ZERO):
        for feature in derived[kind]:
            col[(kind, feature)] = len(col)

    nodes: list[onnx.NodeProto] = []
    tree_input, inits = _tree_input(input_name, derived, nodes)
    nodes.append(
        helper.make_node(
            "TreeEnsemble",
            [tree_input],
            [_PREFIX + "raw64"],
            domain=_ML,
            n_targets=1,
            # SUM, also for random forests (average_output): LightGBM divides by the number of
            # trees only after the raw score, in predict(raw_score=False).
            aggregate_function=1,
            post_transform=0,  # NONE: raw scores
            tree_roots=ens.roots,
            nodes_featureids=[col[c] for c in ens.columns],
            nodes_modes=numpy_helper.from_array(np.asarray(ens.modes, dtype=np.uint8)),
            nodes_splits=numpy_helper.from_array(np.asarray(ens.splits, dtype=np.float64)),
            nodes_missing_value_tracks_true=ens.tracks_true,
            nodes_truenodeids=ens.true_ids,
            nodes_trueleafs=ens.true_leafs,
            nodes_falsenodeids=ens.false_ids,
            nodes_falseleafs=ens.false_leafs,
            leaf_targetids=[0] * len(ens.leaf_weights),
            leaf_weights=numpy_helper.from_array(np.asarray(ens.leaf_weights, dtype=np.float64)),
            **(
                {"membership_values": numpy_helper.from_array(np.asarray(ens.members, np.float64))}
                if ens.members
                else {}
            ),
        )
    )
    inits.append(_const("flat", [-1], np.int64))
    nodes.append(_op("Cast", ["raw64"], ["raw32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Reshape", [_PREFIX + "raw32", _PREFIX + "flat"], [output_name]))

    used = {name for node in nodes for name in node.input}
    inits = [t for t in inits if t.name in used]  # constants of unused branches would warn
    graph = helper.make_graph(
        nodes,
        "lightgbm_raw_score",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", num_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=_OPSETS, producer_name="ranker", producer_version=__version__
    )
    # The oldest IR version these opsets allow: helper's default may be newer than ORT reads.
    model.ir_version = helper.find_min_ir_version_for(_OPSETS)
    helper.set_model_props(
        model,
        {
            "feature_names": json.dumps(dump["feature_names"]),
            "lightgbm_version": lightgbm.__version__,
            "objective": str(dump["objective"]),
            "num_iteration": str(len(dump["tree_info"])),
            "output": "raw_score",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_scores(model: onnx.ModelProto | bytes, X: np.ndarray) -> np.ndarray:
    """Score ``X`` (rows x features) with onnxruntime on one CPU thread; returns float32 (N,)."""
    import onnxruntime as ort  # imported here: exporting does not need the runtime

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(X, dtype=np.float32)
    (scores,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(scores)
