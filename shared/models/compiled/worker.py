"""Child process that compiles one LightGBM text model to native code with lleaves.

Started by :mod:`shared.models.compiled.compiler` as
``python -m shared.models.compiled.worker MODEL OUT TARGET_JSON`` at a lower CPU priority. It
imports nothing else from scorefn, so a crash, a runaway compilation or LLVM's memory never
touch the serving process, and the parent can kill it when it takes too long.

lleaves 1.3.0's own ``Model.compile`` calls APIs that llvmlite 0.45 removed (the legacy pass
manager and ``llvm.initialize()``; lleaves issues #95 and #100). This worker therefore uses
lleaves' parser and code generator as they are and runs the optimisation with llvmlite's new
pass manager (O3; the tree functions are private and called once, so they are inlined), then
lets MCJIT emit the object code, as lleaves' ``compile(cache=...)`` would have stored it.

The forest is compiled for raw scores (no objective function): scorefn applies LightGBM's
output transformation itself (``shared/models/compiled/traits.py``), so one artifact serves predictions
and raw scores.

Exit status: 0 compiled (the object is written to OUT, a JSON line with timings on stdout),
3 lleaves could not compile this model (unsupported), 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT_FUNC = "forest_root"


def compile_object(model_path: str, target: dict) -> bytes:
    """Object code of the model at ``model_path`` for ``target`` (cpu, features, options)."""
    import llvmlite.binding as llvm
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import gen_forest

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    forest = parse_to_ast(model_path)
    forest.raw_score = True
    ir_module = llvmlite.ir.Module(name="forest")
    gen_forest(forest, ir_module, int(target["fblocksize"]), ROOT_FUNC, True)
    ir_module.triple = llvm.get_process_triple()
    module = llvm.parse_assembly(str(ir_module))
    module.verify()
    machine = llvm.Target.from_triple(target["triple"]).create_target_machine(
        cpu=target["cpu"], features=target["features"], reloc="pic", codemodel=target["codemodel"])
    tuning = llvm.create_pipeline_tuning_options(speed_level=int(target["speed_level"]))
    passes = llvm.create_pass_builder(machine, tuning)
    passes.getModulePassManager().run(module, passes)
    engine = llvm.create_mcjit_compiler(module, machine)
    objects: list[bytes] = []
    engine.set_object_cache(notify_func=lambda _module, buf: objects.append(bytes(buf)))
    engine.finalize_object()
    if len(objects) != 1:
        raise RuntimeError(f"MCJIT produced {len(objects)} objects")
    return objects[0]


def _exit_with_parent() -> None:
    """Stop when the serving process is gone (LLVM runs without the GIL, so this thread runs)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(4)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m shared.models.compiled.worker MODEL OUT TARGET_JSON", file=sys.stderr)
        return 2
    model_path, out_path, target_json = argv
    try:
        os.nice(10)  # compilation yields the CPU to request threads
    except (AttributeError, OSError):
        pass
    _exit_with_parent()
    target = json.loads(target_json)
    start = time.perf_counter()
    try:
        data = compile_object(model_path, target)
    except (ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        # lleaves rejects what it does not implement with these (objectives, decision types).
        print(f"unsupported by lleaves: {type(exc).__name__}: {str(exc)[:500]}", file=sys.stderr)
        return 3
    seconds = time.perf_counter() - start
    tmp = out_path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_path)
    print(json.dumps({"seconds": seconds, "bytes": len(data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
