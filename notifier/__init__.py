"""The notifier: pushes committed messages to recipients with no online device (APNs, FCM, Web Push)."""
