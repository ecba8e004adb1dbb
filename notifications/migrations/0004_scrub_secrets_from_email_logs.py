"""Reset tokens used to be kept in password_reset e-mail logs: remove them."""

from django.db import migrations

SECRET_KEYS = ("resetToken",)


def scrub(apps, schema_editor):
    EmailLog = apps.get_model("notifications", "EmailLog")
    for log in EmailLog.objects.filter(template="password_reset").iterator():
        if any(key in (log.data or {}) for key in SECRET_KEYS):
            log.data = {k: v for k, v in log.data.items() if k not in SECRET_KEYS}
            log.save(update_fields=["data"])


class Migration(migrations.Migration):
    dependencies = [("notifications", "0003_email_redrive_schedule")]

    operations = [migrations.RunPython(scrub, migrations.RunPython.noop)]
