//! The simulator's built-in Vietnamese bot-script catalogue, and the generator used for benchmarks.
//!
//! Every script mirrors the shape of the real `GET /api/call_bot/script/list` payload: a fixed 24-hex id
//! (Mongo ObjectId style), a name and 1–5 variables. Variables mix the quirks seen upstream: `type` either
//! `"CONTACT"` or `""`, `field_type` either `"single_text"` or `""`, human-readable or random 10-character
//! `field_code`s, and the odd `null`.

use serde_json::{Value, json};

/// One variable of a script, in the upstream's field order.
fn var(
    field_name: Value,
    field_code: &str,
    field_value: Value,
    field_type: &str,
    kind: &str,
    is_dynamic_attribute: bool,
) -> Value {
    json!({
        "field_name": field_name,
        "field_code": field_code,
        "field_value": field_value,
        "field_type": field_type,
        "type": kind,
        "is_dynamic_attribute": is_dynamic_attribute,
    })
}

/// One script: id, name and variables.
fn script(id: &str, name: &str, variables: Vec<Value>) -> Value {
    json!({ "id": id, "name": name, "variables": variables })
}

/// The built-in catalogue: realistic Vietnamese scripts with fixed ids.
pub(crate) fn builtin() -> Vec<Value> {
    let e = || json!("");
    vec![
        script(
            "64915bc76a690c0edad14723",
            "Thông báo điểm thi",
            vec![
                var(json!("tên thí sinh"), "tên thí sinh", e(), "", "", true),
                var(json!("Toán"), "uB131frQEU", e(), "single_text", "CONTACT", true),
                var(json!("Ngữ văn"), "Kp7wZq2LmX", e(), "single_text", "CONTACT", true),
                var(json!("Tiếng Anh"), "r9TdVh4sNa", e(), "single_text", "CONTACT", true),
            ],
        ),
        script(
            "64a922f61900954f5419d503",
            "Cảnh báo từ khóa tiêu cực",
            vec![
                var(e(), "nhanvien", e(), "", "", true),
                var(e(), "tenkhachhang", e(), "", "", true),
                var(e(), "sodienthoai", e(), "", "", true),
                var(e(), "thoigiangoi", e(), "", "", true),
                var(e(), "diem", e(), "", "", true),
            ],
        ),
        script(
            "64b0c1d27e3f8a0012ab34c1",
            "Nhắc lịch hẹn khám bệnh",
            vec![
                var(json!("Họ tên bệnh nhân"), "Qe8RtY1uIo", e(), "single_text", "CONTACT", true),
                var(json!("Ngày khám"), "aS3dF5gH7j", e(), "single_text", "CONTACT", true),
                var(json!("Bác sĩ"), "Zx9Cv2Bn4M", json!("BS. Nguyễn Văn An"), "", "", false),
            ],
        ),
        script(
            "64b3f0a19c2d4e0013cd56e2",
            "Nhắc nợ thẻ tín dụng",
            vec![
                var(json!("Tên khách hàng"), "Lk2Jh8Gf6D", e(), "single_text", "CONTACT", true),
                var(json!("Số tiền tối thiểu"), "Wq5Er7Ty9U", e(), "single_text", "CONTACT", true),
                var(json!("Hạn thanh toán"), "Po3Iu1Yt5R", e(), "single_text", "CONTACT", true),
                var(json!("4 số cuối thẻ"), "Mn6Bv8Cx0Z", Value::Null, "", "CONTACT", true),
            ],
        ),
        script(
            "64c1a2b38d4e5f0014ef78a3",
            "Xác nhận đơn hàng",
            vec![
                var(json!("Tên khách hàng"), "tenkhachhang", e(), "", "", true),
                var(json!("Mã đơn hàng"), "Hy4Tg6Rf8E", e(), "single_text", "CONTACT", true),
                var(json!("Tổng tiền"), "Dc1Vf3Bg5N", e(), "single_text", "CONTACT", true),
            ],
        ),
        script(
            "64c8e9f07a1b2c0015a19b84",
            "Chăm sóc khách hàng sau mua",
            vec![
                var(json!("Tên khách hàng"), "Xs2Wa4Qz6P", e(), "single_text", "CONTACT", true),
                var(json!("Sản phẩm"), "Ol9Ik7Uj5Y", e(), "", "", true),
            ],
        ),
        script(
            "64d2b4c65e7f800016b2ac95",
            "Khảo sát mức độ hài lòng",
            vec![var(Value::Null, "Gt8Hy0Ju2K", e(), "", "", false)],
        ),
        script(
            "64d9f1e23c4b5a0017c3bda6",
            "Mời tham dự hội thảo",
            vec![
                var(json!("Tên khách mời"), "Fr5De3Sw1A", e(), "single_text", "CONTACT", true),
                var(json!("Chủ đề"), "chude", json!("Chuyển đổi số doanh nghiệp"), "", "", false),
                var(json!("Thời gian"), "Bn7Mj9Ki1L", e(), "single_text", "CONTACT", true),
                var(json!("Địa điểm"), "Vc4Xz6As8D", json!("Khách sạn Rex, Quận 1"), "", "", false),
            ],
        ),
        script(
            "64e0a3b47d8c9e0018d4cea7",
            "Thông báo lịch cúp điện",
            vec![
                var(json!("Khu vực"), "Tk3Lm5Np7Q", e(), "single_text", "CONTACT", true),
                var(json!("Ngày cúp điện"), "ngaycupdien", e(), "", "", true),
                var(json!("Khung giờ"), "Rw2Ex4Cy6V", e(), "single_text", "CONTACT", true),
            ],
        ),
        script(
            "64e7c5d6a9b0f10019e5dfb8",
            "Nhắc đóng học phí",
            vec![
                var(json!("Tên học sinh"), "Jh1Kg3Lf5D", e(), "single_text", "CONTACT", true),
                var(json!("Lớp"), "Sa8Dq0Wf2E", e(), "single_text", "CONTACT", true),
                var(json!("Số tiền"), "sotien", e(), "", "", true),
                var(json!("Hạn nộp"), "Yu6Ti8Ro0P", Value::Null, "single_text", "CONTACT", true),
            ],
        ),
        script(
            "64f1e7f8b0c1d2001af6e0c9",
            "Xác nhận lịch giao hàng",
            vec![
                var(json!("Tên người nhận"), "Zq4Xw6Ce8R", e(), "single_text", "CONTACT", true),
                var(json!("Ngày giao"), "Vt0By2Nu4M", e(), "single_text", "CONTACT", true),
                var(json!("Địa chỉ"), "diachi", e(), "", "", true),
                var(json!("Mã vận đơn"), "Ki9Lo1Pa3S", e(), "single_text", "CONTACT", true),
                var(json!("Phí thu hộ"), "Dj5Fk7Gl9H", json!("0"), "", "", false),
            ],
        ),
        script(
            "6501a9b0c2d3e4001b07f1da",
            "Thông báo trúng thưởng khuyến mãi",
            vec![
                var(json!("Tên khách hàng"), "Qa2Ws4Ed6R", e(), "single_text", "CONTACT", true),
                var(json!("Giải thưởng"), "Tf8Gy0Hu2J", e(), "single_text", "CONTACT", true),
            ],
        ),
        script(
            "650b2c3d4e5f60001c1802eb",
            "Nhắc gia hạn bảo hiểm",
            vec![
                var(json!("Tên khách hàng"), "Ik4Ol6Pz8X", e(), "single_text", "CONTACT", true),
                var(json!("Số hợp đồng"), "Cv0Bn2Mq4W", e(), "single_text", "CONTACT", true),
                var(json!("Ngày hết hạn"), "ngayhethan", e(), "", "", true),
            ],
        ),
        script(
            "651c3d4e5f6a70001d2913fc",
            "Xác nhận đặt bàn nhà hàng",
            vec![
                var(json!("Tên khách"), "Er6Ty8Ui0O", e(), "single_text", "CONTACT", true),
                var(json!("Số người"), "Pa1Sd3Fg5H", e(), "single_text", "CONTACT", true),
                var(json!("Giờ đến"), "Jk7Lz9Xc1V", e(), "", "", true),
            ],
        ),
    ]
}

/// `n` generated scripts (for benchmarks): deterministic ids and 1–5 variables each.
pub(crate) fn generate(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let vars = (0..(i % 5) + 1)
                .map(|j| {
                    var(
                        json!(format!("Biến {j}")),
                        &format!("g{:05x}v{j:03}", i % 0x10_0000),
                        json!(""),
                        if j % 2 == 0 { "single_text" } else { "" },
                        if j % 2 == 0 { "CONTACT" } else { "" },
                        j % 3 != 2,
                    )
                })
                .collect();
            script(&format!("6600000000000000{:08x}", i), &format!("Kịch bản thử nghiệm số {}", i + 1), vars)
        })
        .collect()
}
