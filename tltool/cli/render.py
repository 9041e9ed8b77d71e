"""Turning what the library returns into terminal text: plans, backbone tables, evaluations."""

from __future__ import annotations

import json
import os

import click

from tltool.console import say, table


def plan_text(plan, layers: bool = False) -> str:
    spec, sizes, head = plan.spec, plan.head, plan.head_params
    built = sum(params for *_, params in plan.layers)  # the network tltool keeps (no text tower)
    lines = [f"{spec.name}: {built:,} backbone parameters in {len(spec.group_names)} groups; "
             f"recipe {plan.recipe}"]
    if len(sizes) > 2:
        lines.append(f"head: dense layers {' -> '.join(map(str, sizes))} = {head:,} parameters (always trains)")
    else:
        lines.append(f"head: {sizes[0]} features x {sizes[1]} classes + {sizes[1]} biases = {head:,} "
                     f"parameters (always trains)")
    rows = [[p.name, p.epochs, p.groups, p.batchnorm, f"{p.trainable:,}", f"{p.frozen:,}", f"{100 * p.share:.1f}%"]
            for p in plan.phases]
    lines.append(table(rows, ["phase", "epochs", "backbone groups training", "batchnorm", "trainable", "frozen",
                              "share"], "lrllrrr"))
    lines.append("")
    lines += [f"{p.name}: {_rates(p)}" for p in plan.phases]
    if not plan.has_batchnorm and any(p.batchnorm != "train" for p in plan.phases):
        lines.append(f"batchnorm: {spec.name} has no BatchNorm layer, so the recipe's batchnorm settings do not "
                     "apply (its LayerNorms train with their group)")
    lines.append("\ngroups (input -> output):")
    lines += [f"  {name:<12} {sum(p for _, g, _, _, p in plan.layers if g == name):>12,} parameters"
              for name in spec.group_names]
    if layers:
        rows = [[i, group, name, kind, f"{params:,}"] for i, group, name, kind, params in plan.layers]
        lines.append("\n" + table(rows, ["#", "group", "layer", "type", "parameters"], "rlllr"))
    return "\n".join(lines)


def _rates(phase) -> str:
    """'adam, learning rate 0.001 for every group' or 'adamw, learning rates stem 1e-05, ..., head 0.001'."""
    if phase.rates == "auto":
        return f"{phase.optimizer}, learning rate auto (the learning-rate finder picks it before the phase)"
    if not phase.discriminative:
        return f"{phase.optimizer}, learning rate {phase.rates['head']:.3g} for every group"
    return f"{phase.optimizer}, learning rates " + ", ".join(f"{g} {r:.3g}" for g, r in phase.rates.items())


def backbones_text(specs) -> str:
    rows = [[s.name, s.source, s.family, s.default_size, "yes" if s.any_size else "no",
             f"{s.params / 1e6:.1f}M" + ("*" if s.describe().get("parameters_include_text_tower") else ""),
             _short_groups(s.group_names)] for s in specs]
    text = table(rows, ["name", "source", "family", "size", "other sizes", "params", "groups (input -> output)"],
                 "lllrlrl")
    if any(row[5].endswith("*") for row in rows):
        text += "\n* the whole image-text model's parameters; tltool keeps its vision encoder and drops the text tower"
    return text


def _short_groups(names) -> str:
    names = list(names)
    if len(names) <= 9:
        return " ".join(names)
    return f"{' '.join(names[:3])} ... {' '.join(names[-3:])} ({len(names)})"


def print_evaluation(folder: str, evaluation, show_all: bool = False) -> None:
    """The evaluation's figures on stdout, as its task renders them; the report's path on stderr."""
    from tltool.tasks import get_task

    path = os.path.join(folder, "metrics.json")
    tta = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            tta = json.load(f).get("tta")
    click.echo(get_task(evaluation.task).render(evaluation, show_all, tta))
    say(f"report: {os.path.join(folder, 'report.html')}")
