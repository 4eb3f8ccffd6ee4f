"""zoostage: the stage-side kit, shared by every stage module in models/ and data_scripts/.

It runs inside the containers, in every env: from Python 3.7 + torch 1.5 (the `atc` env)
to the newest Python + torch on the host. It never imports the host package `zoobox`
(tests/test_layering.py checks it) and nothing here imports torch at module level:
stages that need it import it themselves.

    cli         the command-line shell of a stage (--out, env.json, one-line errors)
    errors      UserError and the exit status the host side recognizes
    progress    images done, rate, time left
    fetch       the weights stage
    infer       the infer skeleton: store -> backend -> postprocess -> writer
    shards      merging the outputs of a sharded stage
    verdict     measured vs published, one rule for every report
    report      the report stage; bench_report: throughput per batch size
    envinfo     the versions a stage saw
    backends/   torchscript, onnxruntime, aie, om; the compile stage; the timing harness
"""
