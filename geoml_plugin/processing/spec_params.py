"""Processing parameters and help built from a job's parameter specification (``core/spec.py``).

``number_param(FinetuneConfig, "batch_size")`` gives ``BATCH_SIZE`` with the spec's label, default and range;
``enum_param``, ``boolean_param`` and ``string_param`` likewise; :func:`spec_param` picks by kind and
:meth:`add_spec_params` adds several, folding the advanced ones. :func:`build_help` joins an algorithm's help
from its own paragraphs and the specs' paragraphs, each once, in the order given.
"""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.spec import choice_index, shell_default, shell_minimum, spec_help, spec_of


def number_param(config_class, field_name: str) -> QgsProcessingParameterNumber:
    spec = spec_of(config_class, field_name)
    kind = QgsProcessingParameterNumber.Type.Double if spec.kind == "float" else QgsProcessingParameterNumber.Type.Integer
    kwargs = {}
    lo = shell_minimum(spec)
    if lo is not None:
        kwargs["minValue"] = lo
    if spec.maximum is not None:  # an exclusive maximum (below 1) is refused by the job, with its message
        kwargs["maxValue"] = spec.maximum
    return _flagged(QgsProcessingParameterNumber(spec.name, spec.label, type=kind,
                                                 defaultValue=shell_default(config_class, field_name), **kwargs), spec)


def enum_param(config_class, field_name: str) -> QgsProcessingParameterEnum:
    spec = spec_of(config_class, field_name)
    return _flagged(QgsProcessingParameterEnum(spec.name, spec.label, options=list(spec.choice_labels),
                                               defaultValue=choice_index(config_class, field_name),
                                               allowMultiple=False), spec)


def boolean_param(config_class, field_name: str) -> QgsProcessingParameterBoolean:
    spec = spec_of(config_class, field_name)
    return _flagged(QgsProcessingParameterBoolean(spec.name, spec.label,
                                                  defaultValue=bool(shell_default(config_class, field_name))), spec)


def string_param(config_class, field_name: str) -> QgsProcessingParameterString:
    spec = spec_of(config_class, field_name)
    default = shell_default(config_class, field_name)
    if spec.optional and not default:
        return _flagged(QgsProcessingParameterString(spec.name, spec.label, optional=True), spec)
    return _flagged(QgsProcessingParameterString(spec.name, spec.label, defaultValue=default,
                                                 optional=spec.optional), spec)


_BUILDERS = {"int": number_param, "float": number_param, "enum": enum_param, "bool": boolean_param,
             "str": string_param, "tiles": string_param}


def spec_param(config_class, field_name: str) -> QgsProcessingParameterDefinition:
    """The Processing parameter of ``field_name``, of the type its spec's kind asks for."""
    return _BUILDERS[spec_of(config_class, field_name).kind](config_class, field_name)


def _flagged(param, spec):
    if spec.advanced:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


def add_spec_params(alg, config_class, *field_names: str) -> None:
    """Add the parameters of ``field_names`` to ``alg`` in this order (advanced ones folded by their flag)."""
    for name in field_names:
        alg.addParameter(spec_param(config_class, name))


def build_help(intro: str, *parts) -> str:
    """An algorithm's help: ``intro``, then each part on its own line. A part is a paragraph of text ("" for a
    blank line), or a (Config class, field name) pair standing for that field's help paragraph; a paragraph
    shared by several fields appears once."""
    lines, seen = [], set()
    for part in parts:
        if not isinstance(part, tuple):
            lines.append(part)
            continue
        text = spec_help(*part)
        if text and text not in seen:
            seen.add(text)
            lines.append(text)
    return intro + "\n".join(lines) + "\n"
