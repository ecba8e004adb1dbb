"""Who may see and who may operate the queues (page, API, health).

Two permissions on the queues app, granted through the groups "Queue viewers"
and "Queue operators" (made by migration 0002_i13_queue_roles_and_redrive);
superusers have both. Both need staff: the page lives in the admin.
"""

VIEW_PERMISSION = "queues.view_queues"
OPERATE_PERMISSION = "queues.operate_queues"
VIEWERS_GROUP = "Queue viewers"
OPERATORS_GROUP = "Queue operators"


def user_can_operate_queues(user) -> bool:
    """Pause, resume, clean, retry, remove, re-drive, test."""
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(OPERATE_PERMISSION)
    )


def user_can_view_queues(user) -> bool:
    """The page, the API's reads, health, job details (data masked); an
    operator may always look at what they operate."""
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and (user.has_perm(VIEW_PERMISSION) or user.has_perm(OPERATE_PERMISSION))
    )
