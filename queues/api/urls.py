from django.urls import path

from queues.api import views

urlpatterns = [
    path("stats/<str:queue>", views.QueueStatsView.as_view(), name="queue-stats"),
    path("pause/<str:queue>", views.QueuePauseView.as_view(), name="queue-pause"),
    path("resume/<str:queue>", views.QueueResumeView.as_view(), name="queue-resume"),
    path("clean/<str:queue>", views.QueueCleanView.as_view(), name="queue-clean"),
    path(
        "retry-failed/<str:queue>",
        views.QueueRetryFailedView.as_view(),
        name="queue-retry-failed",
    ),
    path("redrive/<str:queue>", views.QueueRedriveView.as_view(), name="queue-redrive"),
    path("health", views.QueueHealthView.as_view(), name="queue-health"),
    path("test", views.QueueTestJobView.as_view(), name="queue-test"),
    path("jobs/<str:job_id>", views.JobView.as_view(), name="queue-job"),
    path(
        "jobs/<str:job_id>/retry", views.JobRetryView.as_view(), name="queue-job-retry"
    ),
]
