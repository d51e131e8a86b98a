"""Booking: bookings on the patient's behalf, regulator accounts at vendors, appointments reported back."""
