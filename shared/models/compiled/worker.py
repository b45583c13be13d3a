"""Child process that compiles one LightGBM text model to native code with lleaves.

Started by :mod:`shared.models.compiled.build` as
``python -m shared.models.compiled.worker MODEL OUT SPEC_JSON`` at a lower CPU priority. It
imports nothing else from scorefn, so a crash, a runaway compilation or LLVM's memory never
touch the calling process, and the caller can kill it when it takes too long.

**Blocks.** The trees are evaluated in blocks of ``fblocksize`` (instruction-cache blocking):
for each block, for each row, the block's trees are added to the row's outputs one at a time,
starting from what the earlier blocks stored: LightGBM's additions in LightGBM's order, so raw
scores equal LightGBM's to the bit (lleaves' own root function sums a block first and then
adds it, which differs in the last bits).

**Parts.** The forest is cut at block boundaries into ``parts`` modules of about equal size,
each compiled by its own process (``--part K``) into its own object with one function
``forest_part_K`` that runs its blocks; a small root object's ``forest_root`` calls the parts in
order. The additions are the same whatever the number of parts, so the result is too.

lleaves 1.3.0's own ``Model.compile`` calls APIs that llvmlite 0.45 removed (the legacy pass
manager and ``llvm.initialize()``; lleaves issues #95 and #100). This worker uses lleaves'
parser and tree code generator, writes the loops itself, runs llvmlite's new pass manager (O3)
and emits the object with the target machine.

The forest is compiled for raw scores (no objective function): scorefn applies LightGBM's
output transformation itself (``traits.py``), so one artifact serves predictions and raw scores.

Output: the objects ``OUT.0`` ... ``OUT.{parts-1}`` (and ``OUT.root`` when there are several
parts), listed in a JSON line on stdout with the timings. Exit status: 0 compiled, 3 lleaves
could not compile this model (unsupported), 1 anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT_FUNC = "forest_root"


def _part_name(k: int) -> str:
    return f"forest_part_{k}"


def _machine(llvm, target: dict):
    return llvm.Target.from_triple(target["triple"]).create_target_machine(
        cpu=target["cpu"], features=target["features"], reloc="pic", codemodel=target["codemodel"])


def _emit(llvm, ir_text: str, target: dict) -> bytes:
    """Optimise (O3) and emit the object code of one module."""
    module = llvm.parse_assembly(ir_text)
    module.verify()
    machine = _machine(llvm, target)
    tuning = llvm.create_pipeline_tuning_options(speed_level=int(target["speed_level"]))
    passes = llvm.create_pass_builder(machine, tuning)
    passes.getModulePassManager().run(module, passes)
    return machine.emit_object(module)


def _blocks(forest, fblocksize: int) -> list[list]:
    """The trees in evaluation order (by class for multiclass, as lleaves orders them), in
    blocks of ``fblocksize``."""
    trees = sorted(forest.trees, key=lambda t: t.class_id)  # stable, like lleaves' sort
    return [trees[i:i + fblocksize] for i in range(0, len(trees), fblocksize)]


def split_blocks(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous, non-empty ranges of blocks, one per part, of about equal total size."""
    import itertools

    parts = max(1, min(parts, len(sizes)))
    cumulative = list(itertools.accumulate(sizes))  # cumulative[i]: blocks 0..i
    total = cumulative[-1] if cumulative else 0
    bounds = [0]
    for k in range(1, parts):
        # a cut after at least one more block, leaving one block for each part still to come
        lo, hi = bounds[-1] + 1, len(sizes) - (parts - k)
        bounds.append(min(range(lo, hi + 1), key=lambda c: abs(cumulative[c - 1] - total * k / parts)))
    bounds.append(len(sizes))
    return list(zip(bounds, bounds[1:]))


def _tree_size(tree) -> int:
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        count += 1
        if not node.is_leaf:
            stack.extend((node.left, node.right))
    return count


def part_ir(model_path: str, target: dict, part: int, parts: int) -> str:
    """LLVM IR of one part: its trees and ``forest_part_K`` (``forest_root`` when alone)."""
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import codegen

    forest = parse_to_ast(model_path)
    forest.raw_score = True
    fblocksize = int(target["fblocksize"])
    blocks = _blocks(forest, fblocksize)
    start, end = split_blocks([sum(map(_tree_size, b)) for b in blocks], parts)[part]
    module = llvmlite.ir.Module(name=f"forest_part_{part}")
    module.triple = target["triple"]
    dtype_ptr = codegen.DOUBLE_PTR
    name = ROOT_FUNC if parts == 1 else _part_name(part)
    func = llvmlite.ir.Function(module, llvmlite.ir.FunctionType(
        llvmlite.ir.VoidType(), (dtype_ptr, dtype_ptr, codegen.INT, codegen.INT)), name=name)

    # Every input is a double: categorical splits are refused before compiling (traits.py);
    # lleaves also counts unused features ("none") as categorical.
    def make_tree(tree):
        tree_func = llvmlite.ir.Function(module, llvmlite.ir.FunctionType(codegen.DOUBLE, (dtype_ptr,)),
                                         name=str(tree))
        tree_func.linkage = "private"  # called once: LLVM inlines it into its block's loop
        entry = llvmlite.ir.IRBuilder(tree_func.append_basic_block("entry"))
        codegen.gen_tree(tree, _RowFunction(tree_func, entry), True)
        entry.branch(tree_func.blocks[1])  # the root node's block
        return codegen.LTree(llvm_function=tree_func, class_id=tree.class_id)

    mine = [[make_tree(t) for t in block] for block in blocks[start:end]]
    setups = [func.append_basic_block(f"block-{start + i}") for i in range(len(mine))]
    term = func.append_basic_block("term")
    llvmlite.ir.IRBuilder(term).ret_void()
    for i, (setup, funcs) in enumerate(zip(setups, mine)):
        following = setups[i + 1] if i + 1 < len(setups) else term
        _gen_block(func, forest.n_args, forest.n_classes, funcs, setup, following,
                   first=start + i == 0)
    return str(module)


class _RowFunction:
    """A tree function as lleaves' tree code generator sees it: ``args[j]`` is feature ``j``,
    here loaded from the row's address in the function's entry block the first time a split
    uses it (lleaves passes every feature as an argument and loads them all at the top of the
    loop: with the trees inlined, all of them stay live through the block, which makes LLVM's
    code generation several times slower and the code no faster)."""

    def __init__(self, func, entry) -> None:
        self._func, self._entry = func, entry
        self._loaded: dict[int, object] = {}
        self.args = self

    def __getitem__(self, j: int):
        value = self._loaded.get(j)
        if value is None:
            import llvmlite.ir as ir

            index = ir.Constant(ir.IntType(64), j)
            value = self._loaded[j] = self._entry.load(self._entry.gep(self._func.args[0], (index,)))
        return value

    def append_basic_block(self, name: str = ""):
        return self._func.append_basic_block(name)


def _gen_block(func, n_args: int, n_classes: int, trees: list, setup, following, *,
               first: bool) -> None:
    """One block: for each row in [start, end), add the block's trees to the row's outputs.

    Each output starts from what earlier blocks stored (0 in the first block) and adds the
    trees one at a time, in order: the additions LightGBM makes, in its order, so the raw
    scores are LightGBM's to the bit (lleaves' own blocks sum a block first, then add it)."""
    import llvmlite.ir as ir
    from lleaves.compiler.codegen import codegen

    x, out, start, end = func.args
    b = ir.IRBuilder(setup)
    first_row, end64 = b.zext(start, codegen.LONG), b.zext(end, codegen.LONG)
    cond = func.append_basic_block("cond")
    body = func.append_basic_block("body")
    b.branch(cond)
    b = ir.IRBuilder(cond)
    row = b.phi(codegen.LONG, "row")
    row.add_incoming(first_row, setup)
    b.cbranch(b.icmp_signed("<", row, end64), body, following)
    b = ir.IRBuilder(body)
    row_ptr = b.gep(x, (b.mul(row, ir.Constant(codegen.LONG, n_args)),))
    out_base = b.mul(row, ir.Constant(codegen.LONG, n_classes))
    ptrs = [b.gep(out, (b.add(out_base, ir.Constant(codegen.LONG, k)),)) for k in range(n_classes)]
    sums = [ir.Constant(codegen.DOUBLE, 0.0) if first else b.load(p) for p in ptrs]
    for tree in trees:
        value = b.call(tree.llvm_function, (row_ptr,))
        sums[tree.class_id] = b.fadd(sums[tree.class_id], value)
    for total, ptr in zip(sums, ptrs):
        b.store(total, ptr)
    row.add_incoming(b.add(row, ir.Constant(codegen.LONG, 1)), body)
    b.branch(cond)


def root_ir(target: dict, parts: int) -> str:
    """LLVM IR of ``forest_root``: calls the parts in order."""
    import llvmlite.ir
    from lleaves.compiler.codegen import codegen

    module = llvmlite.ir.Module(name="forest_root")
    module.triple = target["triple"]
    ftype = llvmlite.ir.FunctionType(llvmlite.ir.VoidType(), (codegen.DOUBLE_PTR, codegen.DOUBLE_PTR,
                                                              codegen.INT, codegen.INT))
    root = llvmlite.ir.Function(module, ftype, name=ROOT_FUNC)
    builder = llvmlite.ir.IRBuilder(root.append_basic_block("entry"))
    for k in range(parts):
        builder.call(llvmlite.ir.Function(module, ftype, name=_part_name(k)), root.args)
    builder.ret_void()
    return str(module)


def compile_part(model_path: str, target: dict, part: int, parts: int) -> bytes:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return _emit(llvm, part_ir(model_path, target, part, parts), target)


def _exit_with_parent() -> None:
    """Stop when the calling process is gone (LLVM runs without the GIL, so this thread runs)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(4)

    threading.Thread(target=watch, daemon=True).start()


def _write(path: str, data: bytes) -> None:
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _run_part(model_path: str, out_path: str, target: dict, part: int, parts: int) -> int:
    try:
        data = compile_part(model_path, target, part, parts)
    except (ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        # lleaves rejects what it does not implement with these (objectives, decision types).
        print(f"unsupported by lleaves: {type(exc).__name__}: {str(exc)[:500]}", file=sys.stderr)
        return 3
    _write(f"{out_path}.{part}", data)
    return 0


def _count_blocks(model_path: str, fblocksize: int) -> int:
    from lleaves.compiler.ast import parse_to_ast

    return len(_blocks(parse_to_ast(model_path), fblocksize))


def main(argv: list[str]) -> int:
    part = None
    if len(argv) == 5 and argv[3] == "--part":
        part = int(argv[4])
        argv = argv[:3]
    if len(argv) != 3:
        print("usage: python -m shared.models.compiled.worker MODEL OUT SPEC_JSON [--part K]",
              file=sys.stderr)
        return 2
    model_path, out_path, spec_json = argv
    target = json.loads(spec_json)
    try:
        os.nice(int(target.get("nice", 10)))  # compilation yields the CPU to request threads
    except (AttributeError, OSError):
        pass
    _exit_with_parent()
    parts = max(1, int(target.get("parts", 1)))
    if part is not None:
        return _run_part(model_path, out_path, target, part, parts)

    start = time.perf_counter()
    try:
        parts = min(parts, _count_blocks(model_path, int(target["fblocksize"])))
    except (ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        print(f"unsupported by lleaves: {type(exc).__name__}: {str(exc)[:500]}", file=sys.stderr)
        return 3
    spec = json.dumps({**target, "parts": parts, "nice": 0})  # children inherit our niceness
    children = [subprocess.Popen([sys.executable, "-m", "shared.models.compiled.worker", model_path,
                                  out_path, spec, "--part", str(k)], stdin=subprocess.DEVNULL)
                for k in range(1, parts)]
    try:
        status = _run_part(model_path, out_path, target, 0, parts)
        objects = [f"{out_path}.{k}" for k in range(parts)]
        if parts > 1 and status == 0:
            import llvmlite.binding as llvm

            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _write(f"{out_path}.root", _emit(llvm, root_ir(target, parts), target))
            objects.append(f"{out_path}.root")
        for child in children:
            code = child.wait()
            status = status or code
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    if status != 0:
        return status
    print(json.dumps({"seconds": time.perf_counter() - start, "parts": parts, "objects": objects}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
