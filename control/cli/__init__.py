"""The ``foundry`` command line.

Each command group lives in its own module and registers itself on the root app:
``up``/``config`` (:mod:`control.cli.stack`), ``keys``/``projects``/``usage``
(:mod:`control.cli.admin`, members in :mod:`control.cli.members`), ``users``
(:mod:`control.cli.users`), ``audit`` (:mod:`control.cli.audit`), ``login``/``logout``
(:mod:`control.cli.login`), ``secrets`` (:mod:`control.cli.secrets`), ``pipelines``
(:mod:`control.cli.pipelines`), ``models`` (:mod:`control.cli.models`), ``clusters``
(:mod:`control.cli.clusters`), ``deploy``/``deployments`` (:mod:`control.cli.deploy`), and the
optimizer's ``predict``/``optimize``/``tune``/``bench`` (:mod:`tune.cli`).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="foundry",
    help="Foundry: an OpenAI-compatible serving and optimization stack on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from control.cli import admin, audit, clusters, deploy, login, models, pipelines, secrets, stack, users
    from tune import cli as tune_cli

    stack.register(app)
    admin.register(app)
    users.register(app)
    audit.register(app)
    login.register(app)
    secrets.register(app)
    pipelines.register(app)
    models.register(app)
    clusters.register(app)
    deploy.register(app)
    from control.trials import ClusterDeployer

    tune_cli.register(app, trial_deployer=ClusterDeployer)


_register()


def main() -> None:
    app()
