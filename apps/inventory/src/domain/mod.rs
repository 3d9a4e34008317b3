//! The inventory domain: products, the values they are made of, and reservations.

mod product;
mod reservation;

pub use product::{
    Category, Currency, Description, Money, ProductId, ProductName, Stock, StoredProduct,
};
pub use reservation::{OrderId, Quantity, Reservation, ReservationLine, ReservationStatus};
