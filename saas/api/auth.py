"""Registration and JWT tokens: throttled, on their own cache alias."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import (
    BlacklistedToken,
    OutstandingToken,
)
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from notifications.services import email_enqueue
from saas.api.throttles import (
    AuthRateThrottle,
    ResetAddressRateThrottle,
    UsernameRateThrottle,
)
from saas.passwords import password_reset_user

User = get_user_model()


class RegisterSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    email = serializers.EmailField()
    password = serializers.CharField(write_only=True, max_length=128)

    def validate_username(self, value: str) -> str:
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate(self, attrs):
        candidate = User(username=attrs["username"], email=attrs["email"])
        validate_password(attrs["password"], user=candidate)
        return attrs


class RegisteredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    access = serializers.CharField()
    refresh = serializers.CharField()


def user_register(*, username: str, email: str, password: str):
    with transaction.atomic():
        return User.objects.create_user(
            username=username, email=email, password=password
        )


class OpenAuthView(generics.GenericAPIView):
    """Endpoints for callers without a token: no auth, throttled per address."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    throttle_classes = [AuthRateThrottle]


class RegisterView(OpenAuthView):
    serializer_class = RegisterSerializer

    @extend_schema(responses={201: RegisteredSerializer})
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_register(**serializer.validated_data)
        refresh = RefreshToken.for_user(user)
        body = RegisteredSerializer(
            {
                "id": user.pk,
                "username": user.username,
                "email": user.email,
                "access": str(refresh.access_token),
                "refresh": str(refresh),
            }
        ).data
        return Response(body, status=status.HTTP_201_CREATED)


class ThrottledTokenObtainPairView(TokenObtainPairView):
    throttle_classes = [AuthRateThrottle, UsernameRateThrottle]


class RevocableTokenRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh, which does not look at the revoke claim: here a
    refresh token made before the user's password last changed is refused."""

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        user = User.objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        if user is not None and refresh.payload.get(
            jwt_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        return super().validate(attrs)


class ThrottledTokenRefreshView(TokenRefreshView):
    throttle_classes = [AuthRateThrottle]
    serializer_class = RevocableTokenRefreshSerializer


# --- Password reset -----------------------------------------------------------

RESET_REQUESTED = {
    "detail": "If an account uses this address, a password reset e-mail is on its way."
}


@transaction.atomic
def password_reset_request(*, email: str) -> int:
    """Mail a reset token to each active account with this address; the caller
    answers the same whether there was one or not. The job carries the user's
    id, never the token: the e-mail worker makes it at send time."""
    users = [
        user
        for user in User.objects.filter(email__iexact=email, is_active=True)
        if user.has_usable_password()
    ]
    for user in users:
        email_enqueue(
            to=user.email,
            template="password_reset",
            data={
                "userName": user.get_full_name() or user.get_username(),
                "userId": user.pk,
                "expiresHours": settings.PASSWORD_RESET_TIMEOUT // 3600,
            },
        )
    return len(users)


@transaction.atomic
def password_reset_confirm(*, token: str, new_password: str):
    """Set the new password; the token and every refresh token die with it."""
    user = password_reset_user(token)
    if user is None:
        raise ValidationError({"token": "This reset token is invalid or expired."})
    try:
        validate_password(new_password, user=user)
    except ValidationError as exc:
        raise ValidationError({"new_password": exc.messages}) from None
    user.set_password(new_password)
    user.save(update_fields=["password"])
    for outstanding in OutstandingToken.objects.filter(user=user):
        BlacklistedToken.objects.get_or_create(token=outstanding)
    return user


class PasswordResetSerializer(serializers.Serializer):
    email = serializers.EmailField()


class PasswordResetConfirmSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=512)
    new_password = serializers.CharField(write_only=True, max_length=128)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class PasswordResetView(OpenAuthView):
    serializer_class = PasswordResetSerializer
    throttle_classes = [AuthRateThrottle, ResetAddressRateThrottle]

    @extend_schema(responses=DetailSerializer)
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        password_reset_request(email=serializer.validated_data["email"])
        return Response(RESET_REQUESTED, status=status.HTTP_200_OK)


class PasswordResetConfirmView(OpenAuthView):
    serializer_class = PasswordResetConfirmSerializer

    @extend_schema(responses=DetailSerializer)
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        password_reset_confirm(**serializer.validated_data)
        return Response({"detail": "Your password is changed."})
