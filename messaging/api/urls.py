from rest_framework.routers import SimpleRouter

from messaging.api.views import ConversationViewSet, MessageViewSet, TemplateViewSet

router = SimpleRouter(trailing_slash=True, use_regex_path=False)
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("messages", MessageViewSet, basename="message")
router.register("templates", TemplateViewSet, basename="template")
urlpatterns = router.urls
