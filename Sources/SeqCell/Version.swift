public enum SeqCellVersion { public static let string = "0.1.0" }
