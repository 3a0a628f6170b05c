"""The console's C{k8s} kind, its light part: the TUNNELS column and `jump item create k8s`.

A session of the kind (an HTTPS listener, a kubeconfig per session,
KUBECONFIG) is L{console.kinds.kubernetes_session}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from console.kinds.base import ConsoleKind, Decorator, Submit, local_port_option
from shared.errors import UsageError
from shared.kinds.kubernetes import NAME


class KubernetesKind(ConsoleKind):
    name = NAME

    def targets(self, entry: dict[str, Any]) -> str:
        return str(entry.get("url", ""))

    def create_command(self, common: Decorator, submit: Submit) -> click.Command:
        @click.command(NAME)
        @click.argument("name")
        @click.option("--url", required=True, help="The API server's https:// URL.")
        @click.option(
            "--ca-file",
            required=True,
            type=click.Path(dir_okay=False, exists=True),
            help="PEM file of the cluster's CA certificates (a chain is allowed).",
        )
        @click.option("--namespace", help="Default namespace.")
        @click.option("--local-port", help="Local port (a number or auto; default auto).")
        @common
        def create_k8s(
            name: str,
            url: str,
            ca_file: str,
            namespace: str | None,
            local_port: str | None,
            **options: Any,
        ) -> None:
            """A Kubernetes cluster item."""
            try:
                pem = Path(ca_file).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as error:
                raise UsageError(f"--ca-file: cannot read {ca_file}: {error}") from None
            submit(
                name,
                options,
                url=url,
                ca_pem=pem,
                namespace=namespace,
                local_port=local_port_option(local_port),
            )

        return create_k8s


KIND = KubernetesKind()
