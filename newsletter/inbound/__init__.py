"""Mail that comes back: bounces, feedback-loop complaints and mailto: unsubscribes."""
