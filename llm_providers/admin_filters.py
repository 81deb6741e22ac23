"""Admin list filters that say when a value in the address is none of their choices."""

from __future__ import annotations

from django.contrib import admin, messages


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


class ChoicesListFilter(admin.ChoicesFieldListFilter):
    """A field's choices, as Django lists them; a value that is none of them (a
    typed or outdated address) lists nothing and says which there are, instead of
    an empty list that reads as "no such rows".

    `?status=error` is read as `?status__exact=error`, the address the filter writes.
    """

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        bare = self.used_parameters.pop(field_path, None)
        if bare is not None:
            self.used_parameters[self.lookup_kwarg] = [
                *self.used_parameters.get(self.lookup_kwarg, []),
                *bare,
            ]
            self.lookup_val = self.used_parameters[self.lookup_kwarg]

    def expected_parameters(self):
        return [*super().expected_parameters(), self.field_path]

    def queryset(self, request, queryset):
        known = {str(value): label for value, label in self.field.flatchoices if value is not None}
        unknown = [
            v for v in self.used_parameters.get(self.lookup_kwarg, []) if str(v) not in known
        ]
        if unknown:
            messages.error(
                request,
                f"“{unknown[0]}” is not {_a(str(self.title))}; "
                f"choose one of: {', '.join(str(label) for label in known.values())}.",
            )
            return queryset.none()
        return super().queryset(request, queryset)
