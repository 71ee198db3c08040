"""axmoe eval: what approximation does to dense and MoE models.

    python -m eval run MODEL.onnx --dataset fashion-mnist     # one model
    python -m eval sweep configs/demo.yaml                     # a study, then a report

Modules: `evaluate` (the two passes of `eval run`), `graph` (MAC layers, MoE roles, row
proxies), `macs` (active MACs and expert load from measured rows), `power` (normalised
power), `latency`, `backends` (ort | tvm); `axes` (the sweep axes, each declared once), `sweep_config`
(YAML -> cells), `jobs` (model and
cell jobs in hash-named folders, output digests), `locks` (one process per job folder),
`identity` (the code a result was made by), `executors` (process pool | Ray), `sweep`,
`report`, `plots`; `cli`, `run_args`, `sweep_args`, `run`.
"""
