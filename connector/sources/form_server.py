"""What the ODK Central and Kobo sources share: the fields a form offers to a mapping.

A form-server record carries more than the form's questions: the server's metadata under fixed
keys (`_submission_time`, `_updated_at`, ...: `xlsform.META_KEYS`) and each repeat as a list under
its own name. `check` compares a mapping's raw names with what `fields()` offers, so both must be
offered, or `check` warns that `ext_RegistrationDate <- _submission_time` and the repeat-fed fields
"will stay unknown" when every record has them.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.sources.base import FieldInfo
from connector.sources.xlsform import META_KEYS, FormDefinition


def form_fields(form: FormDefinition, renames: Mapping[str, str]) -> list[FieldInfo]:
    """The form's questions (renamed as the mapping expects), each repeat by name, and the metadata keys."""
    out = [FieldInfo(renames.get(f.name, f.name), f.label, f.type, f.choices) for f in form.field_infos()]
    names = {f.name for f in out}
    for path in form.repeats:
        name = renames.get(path.rsplit("/", 1)[-1], path.rsplit("/", 1)[-1])
        if name not in names:
            out.append(FieldInfo(name, None, "repeat"))
            names.add(name)
    out.extend(FieldInfo(key, None, "metadata") for key in META_KEYS if key not in names)
    return out
