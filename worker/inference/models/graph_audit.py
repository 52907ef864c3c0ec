"""The safe-mode audit of a SavedModel: every op it holds, checked against an allow-list before loading.

``tf.saved_model.load`` runs code from the model while it loads (resource initializers,
and, for TF1-style models, the restore and init ops), so the audit reads ``saved_model.pb``
itself — the file the loader parses — and looks at everything in it: the nodes of every
MetaGraph and every function in its library, called or not, whoever calls it (a signature,
an initializer, another function, nothing). An op is a node's ``op`` or a function named in
a node's attributes (``PartitionedCall``'s ``f``, a loop's ``body``...), since TensorFlow runs
a primitive op named there as well; a name that is a function of the library is that function,
which is audited on its own.

Checkpoint ops, which read and write files, are allowed only in the saver's own functions:
the ones that only ``saver_def``'s save (``SaveV2``...) or restore node (``RestoreV2``) calls,
that no signature, collection, object-graph entry (initializers are there) or other node
reaches. TensorFlow 2 restores variables with its own ops and never runs either function;
bulklabel never saves; a TF1-style loader runs the restore node, whose function may then
read a checkpoint but write nothing. A TF1 SavedModel (``tf.compat.v1`` builders), whose
saver is plain graph nodes rather than functions, is therefore refused in safe mode.
"""

from __future__ import annotations

from collections.abc import Iterator

from .allowed_ops import INFERENCE_OPS, RESTORE_OPS, SAVE_OPS

_STRICT, _SAVE, _RESTORE = "strict", "save", "restore"
_EXTRA = {frozenset({_SAVE}): SAVE_OPS, frozenset({_RESTORE}): RESTORE_OPS}


def refused_ops(saved_model) -> list[str]:
    """The op names in ``saved_model`` (a ``SavedModel`` proto) that serving may not run, sorted."""
    refused: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        refused |= _audit(meta_graph)
    return sorted(refused)


def _audit(meta_graph) -> set[str]:
    graph = meta_graph.graph_def
    library = {fn.signature.name for fn in graph.library.function}
    saver = _saver_nodes(meta_graph)

    refused: set[str] = set()
    saver_roots: list[tuple[str, set[str]]] = []
    strict_roots: set[str] = set(_object_graph_functions(meta_graph, library))
    for node in graph.node:
        ops, callees = _scan([node], library)
        refused |= ops - INFERENCE_OPS
        if node.name in saver:
            saver_roots.append((saver[node.name], callees))
        else:
            strict_roots |= callees
    # Every FunctionDef is audited, duplicates of a name included; calls are by name.
    bodies = [(fn.signature.name, *_scan(fn.node_def, library)) for fn in graph.library.function]
    calls: dict[str, set[str]] = {name: set() for name in library}
    for name, _, callees in bodies:
        calls[name] |= callees
    # Who reaches each function: the saver's save node, its restore node, or anything else —
    # other nodes, the object graph, and, for a function the saver nodes do not reach,
    # nothing at all (the uncalled are audited like the rest).
    reached: dict[str, set[str]] = {name: set() for name in library}
    for kind, names in saver_roots:
        _reach(kind, names, calls, reached)
    _reach(_STRICT, strict_roots | {name for name, kinds in reached.items() if not kinds}, calls, reached)
    for name, ops, _ in bodies:
        refused |= ops - INFERENCE_OPS - _EXTRA.get(frozenset(reached[name]), frozenset())
    return refused


def _reach(kind: str, names, calls, reached) -> None:
    stack = list(names)
    while stack:
        name = stack.pop()
        if kind not in reached[name]:
            reached[name].add(kind)
            stack.extend(calls[name])


def _scan(nodes, library) -> tuple[set[str], set[str]]:
    """(primitive ops, library functions) that ``nodes`` run: each node's op, and each name
    given where a function goes — TensorFlow runs a primitive op named there too."""
    ops: set[str] = set()
    callees: set[str] = set()
    for node in nodes:
        (callees if node.op in library else ops).add(node.op)
        for value in node.attr.values():
            for name in _func_names(value):
                (callees if name in library else ops).add(name)
    return ops, callees


def _func_names(value) -> Iterator[str]:
    """The names in a function-valued attribute (``func`` or a ``list`` of them), nested too."""
    kind = value.WhichOneof("value")
    funcs = [value.func] if kind == "func" else list(value.list.func) if kind == "list" else []
    for func in funcs:
        yield func.name
        for inner in func.attr.values():
            yield from _func_names(inner)


def _object_graph_functions(meta_graph, library) -> set[str]:
    """Functions the TF2 loader may call: initializers, saveables' restore functions, signatures."""
    objects = meta_graph.object_graph_def
    names = set(objects.concrete_functions)
    for obj in objects.nodes:
        kind = obj.WhichOneof("kind")
        if kind == "function":
            names.update(obj.function.concrete_functions)
        elif kind == "bare_concrete_function":
            names.add(obj.bare_concrete_function.concrete_function_name)
    return names & library


def _saver_nodes(meta_graph) -> dict[str, str]:
    """The graph nodes ``saver_def`` names for saving and restoring, if nothing else uses them.

    A node that a signature, a collection or another node's input refers to can run when
    those do, so it is audited like any other.
    """
    saver = meta_graph.saver_def
    nodes = {_node_name(saver.save_tensor_name): _SAVE, _node_name(saver.restore_op_name): _RESTORE}
    nodes.pop("", None)
    if len(nodes) < 2 and saver.save_tensor_name and saver.restore_op_name:
        return {}  # one node that both saves and restores: nothing extra is allowed
    used = {_node_name(name) for node in meta_graph.graph_def.node for name in node.input}
    for signature in meta_graph.signature_def.values():
        for info in (*signature.inputs.values(), *signature.outputs.values()):
            used.add(_node_name(info.name))
            used.update(_node_name(getattr(info.coo_sparse, field)) for field in
                        ("values_tensor_name", "indices_tensor_name", "dense_shape_tensor_name"))
            used.update(_node_name(c.name) for c in info.composite_tensor.components)
    for collection in meta_graph.collection_def.values():
        used.update(_node_name(name) for name in collection.node_list.value)
    return {name: kind for name, kind in nodes.items() if name not in used}


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]
