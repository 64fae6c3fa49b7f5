"""KPI libraries shipped with kpi-engine (installed as the package kpi_engine.definitions).

Each folder is a library of YAML spec files; a project includes one with
``include: [builtin:<folder>]`` in its kpi_engine.yaml.
"""
